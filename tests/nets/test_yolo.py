import keras
import numpy as np
import pytest

from nets.attention import PHI_TO_ATTENTION, AttentionError
from nets.model_data import ANCHORS_MASK, load_anchors
from nets.yolo import (
    ATTENTION_POINTS,
    DEFAULT_POINTS,
    INSERTION_POINTS,
    YoloV4Tiny,
    default_points,
    parse_points,
    yolo_body,
)

# The number of floats in darknet's official yolov4-tiny.weights (after the header).
DARKNET_YOLOV4_TINY_FLOATS = 6_062_814


def test_phi0_with_80_classes_has_exactly_darknets_parameter_count():
    model = yolo_body((None, None, 3), ANCHORS_MASK, 80, phi=0)
    assert model.count_params() == DARKNET_YOLOV4_TINY_FLOATS


@pytest.mark.parametrize("phi", range(6))
def test_heads_for_square_and_non_square_inputs(phi):
    model = yolo_body((None, None, 3), ANCHORS_MASK, 2, phi=phi)
    assert model.attention == PHI_TO_ATTENTION[phi]
    for height, width in [(64, 64), (96, 160)]:
        p5, p4 = model(np.zeros((1, height, width, 3), "float32"))
        assert tuple(p5.shape) == (1, height // 32, width // 32, 3 * 7)
        assert tuple(p4.shape) == (1, height // 16, width // 16, 3 * 7)
    inserted = [name for name in ATTENTION_POINTS if name in {layer.name for layer in model.layers}]
    assert inserted == ([] if phi == 0 else ["attention_feat2"] if phi == 5 else list(ATTENTION_POINTS))


def test_attention_points_see_the_documented_shapes():
    model = YoloV4Tiny(20, attention="se", input_shape=(416, 416, 3))
    shapes = {name: tuple(model.get_layer(name).input.shape[1:]) for name in ATTENTION_POINTS}
    assert shapes == {
        "attention_feat1": (26, 26, 256),
        "attention_feat2": (13, 13, 512),
        "attention_p5_upsample": (26, 26, 128),
    }


def test_heads_are_raw():
    model = YoloV4Tiny(3, input_shape=(64, 64, 3))
    for name in ("conv_29", "conv_36"):
        layer = model.get_layer(name)
        assert layer.activation is keras.activations.linear and layer.use_bias
    outputs = model(np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype("float32"))
    assert min(float(np.min(o)) for o in outputs) < 0  # no sigmoid/ReLU on the way out


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": (100, 96, 3)}, "multiples of 32"),
    ({"input_shape": (96, 96, 1)}, "height, width, 3"),
    ({"attention": "nope"}, "expected one of"),
    ({"class_names": ["a"]}, "1 class names given for 3 classes"),
    ({"anchors_mask": [[0, 1, 9], [1, 2, 3]]}, "refers past"),
])
def test_bad_arguments_are_rejected_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        YoloV4Tiny(3, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("phi", range(6))
def test_keras_file_reloads_safely_and_remembers_its_settings(phi, tmp_path):
    anchors = (load_anchors() * 0.5).tolist()
    model = yolo_body((None, None, 3), ANCHORS_MASK, 3, phi=phi, class_names=["a", "b", "c"], anchors=anchors)
    x = np.random.default_rng(phi).uniform(size=(1, 64, 96, 3)).astype("float32")
    expected = model(x)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode defaults to True; no custom_objects
    assert isinstance(loaded, YoloV4Tiny)
    assert loaded.attention == PHI_TO_ATTENTION[phi]
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.anchors == anchors and loaded.anchors_mask == [list(m) for m in ANCHORS_MASK]
    for got, want in zip(loaded(x), expected):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


ALL_POINTS = ["stage1", "stage2", "feat1", "stage3", "feat2", "head_p5", "p5_upsample", "head_p4"]


def test_insertion_points_see_the_documented_shapes():
    model = YoloV4Tiny(20, attention="eca", attention_at=",".join(reversed(ALL_POINTS)), input_shape=(416, 416, 3))
    assert list(INSERTION_POINTS) == ALL_POINTS and model.attention_at == tuple(ALL_POINTS)  # network order
    shapes = {name: tuple(model.get_layer(name).input.shape[1:]) for name in model.attention_layers}
    assert shapes == {
        "attention_stage1": (52, 52, 128),
        "attention_stage2": (26, 26, 256),
        "attention_feat1": (26, 26, 256),
        "attention_stage3": (13, 13, 512),
        "attention_feat2": (13, 13, 512),
        "attention_head_p5": (13, 13, 512),
        "attention_p5_upsample": (26, 26, 128),
        "attention_head_p4": (26, 26, 256),
    }
    # Each point's text in INSERTION_POINTS gives its shape at 416.
    for point, (h, w, c) in zip(ALL_POINTS, shapes.values()):
        assert f"{h}x{w}x{c}" in INSERTION_POINTS[point]
    # The heads and the routes see the blocks' outputs.
    assert model.get_layer("conv_29").input is model.get_layer("attention_head_p5").output
    assert model.get_layer("conv_26").input is model.get_layer("attention_stage3").output


def test_default_points_and_what_the_config_records():
    default = YoloV4Tiny(3, attention="cbam")
    assert default.attention_at == DEFAULT_POINTS and default.attention_layers == list(ATTENTION_POINTS)
    assert not {"attention_at", "fusion", "identity_init"} & set(default.get_config())  # earlier configs unchanged
    assert YoloV4Tiny(3, attention="sa").attention_layers == ["attention_feat2"]  # self-attention: 13x13 only
    assert default_points("none") == () and YoloV4Tiny(3, attention_at="stage1").attention_layers == []
    model = YoloV4Tiny(3, attention="se", attention_at="head_p5,head_p4", fusion="weighted", identity_init=True)
    config = model.get_config()
    assert config["attention_at"] == ["head_p5", "head_p4"] and config["fusion"] == "weighted"
    assert config["identity_init"] is True
    clone = YoloV4Tiny.from_config(config)
    assert clone.attention_layers == ["attention_head_p5", "attention_head_p4"] and clone.fusion == "weighted"
    assert clone.get_layer("attention_head_p5").identity_init
    assert "route_34" not in {layer.name for layer in clone.layers} and clone.get_layer("fusion_34")


@pytest.mark.parametrize("points, message", [
    ("feat1,nowhere", "unknown nowhere"),
    ("feat1,feat1", "repeated"),
    ("", "repeated or empty"),
])
def test_bad_points_name_the_valid_ones(points, message):
    with pytest.raises(AttentionError, match=f"{message}.*the points are stage1, stage2, feat1"):
        parse_points(points)
    with pytest.raises(ValueError, match="--fusion must be one of concat, weighted"):
        YoloV4Tiny(3, fusion="sum")


def test_weighted_fusion_keeps_the_heads_width_and_the_darknet_layers():
    plain, fused = YoloV4Tiny(3), YoloV4Tiny(3, fusion="weighted")
    assert fused.get_layer("conv_35").kernel.shape == plain.get_layer("conv_35").kernel.shape == (3, 3, 384, 256)
    assert fused.count_params() - plain.count_params() == 128 * 384 + 256 * 384 + 2


@pytest.mark.slow
def test_placed_blocks_and_fusion_reload_and_predict(tmp_path):
    model = YoloV4Tiny(3, attention="ca", attention_at="stage2,head_p4", fusion="weighted", identity_init=True)
    x = np.random.default_rng(0).uniform(size=(1, 64, 96, 3)).astype("float32")
    model.get_layer("fusion_34").fusion_weights.assign([0.4, 1.7])
    expected = model(x)
    model.save(tmp_path / "placed.keras")
    loaded = keras.saving.load_model(tmp_path / "placed.keras")
    assert loaded.attention_at == ("stage2", "head_p4") and loaded.fusion == "weighted" and loaded.identity_init
    for got, want in zip(loaded(x), expected):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    fixed = loaded.at_input_size((64, 96))  # rebuilt from the config: the same points and fusion
    np.testing.assert_array_equal(np.asarray(fixed(x)[1]), np.asarray(expected[1]))
