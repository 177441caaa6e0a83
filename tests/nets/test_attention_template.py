"""nets/attention_template.py, the block users copy: it passes the shared layer checks and the
start-up contract check, draws in predict.py --mode attention, and summary.py counts it."""

import numpy as np

import summary
from nets.attention import ATTENTION_BLOCKS, attention_module, check_attention_block, resolve_attention
from nets.attention_template import SpatialGate
from tests.layer_checks import check_config_round_trip, check_gradient_step, check_save_load, check_shape_preserved
from utils.inference.explain import block_map

CHANNELS = 32


def sample(shape=(2, 6, 10, CHANNELS), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_shape_config_save_load_and_a_training_step(tmp_path):
    check_shape_preserved(SpatialGate, [(2, 8, 8, CHANNELS), (1, 13, 7, CHANNELS)])
    check_config_round_trip(SpatialGate(kernel_size=3, name="gate"), sample())
    check_save_load(SpatialGate(), sample(), tmp_path)  # safe mode, no custom_objects
    check_gradient_step(SpatialGate(), sample())


def test_it_is_registered_and_keeps_the_contract():
    assert ATTENTION_BLOCKS["spatial_gate"] is SpatialGate
    assert attention_module("spatial_gate") == "nets.attention_template"
    check_attention_block("spatial_gate")  # raises BlockContractError on any breach
    assert resolve_attention(attention="nets.attention_template:SpatialGate") == "nets.attention_template:SpatialGate"


def test_its_attention_weights_draw_as_a_spatial_map():
    x = sample()
    gate = SpatialGate()
    gate(x)  # built, as in a model
    what, values = block_map(gate, x)
    assert what == "spatial weight" and values.shape == (2, 6, 10)
    assert ((values > 0) & (values < 1)).all()


def test_summary_counts_a_user_block(capsys):
    assert summary.main(["--attention", "spatial_gate", "--num-classes", "2", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    # 3 points x one 7x7 conv from 2 channels to 1: 3 x (98 + 1) parameters
    assert "spatial_gate" in out and out.count("99 /") == 3


def test_identity_init_starts_as_the_identity_and_models_pass_it():
    from nets.yolo import YoloV4Tiny

    x = sample()
    np.testing.assert_array_equal(np.asarray(SpatialGate(identity_init=True)(x)), x)
    check_config_round_trip(SpatialGate(identity_init=True), x)
    model = YoloV4Tiny(2, attention="spatial_gate", attention_at="head_p4", identity_init=True)
    assert model.get_layer("attention_head_p4").identity_init
