import keras
import numpy as np
import pytest

from nets.attention import PHI_TO_ATTENTION
from nets.model_data import ANCHORS_MASK, load_anchors
from nets.yolo import ATTENTION_POINTS, YoloV4Tiny, yolo_body

# The number of floats in darknet's official yolov4-tiny.weights (after the header).
DARKNET_YOLOV4_TINY_FLOATS = 6_062_814


def test_phi0_with_80_classes_has_exactly_darknets_parameter_count():
    model = yolo_body((None, None, 3), ANCHORS_MASK, 80, phi=0)
    assert model.count_params() == DARKNET_YOLOV4_TINY_FLOATS


@pytest.mark.parametrize("phi", range(5))
def test_heads_for_square_and_non_square_inputs(phi):
    model = yolo_body((None, None, 3), ANCHORS_MASK, 2, phi=phi)
    assert model.attention == PHI_TO_ATTENTION[phi]
    for height, width in [(64, 64), (96, 160)]:
        p5, p4 = model(np.zeros((1, height, width, 3), "float32"))
        assert tuple(p5.shape) == (1, height // 32, width // 32, 3 * 7)
        assert tuple(p4.shape) == (1, height // 16, width // 16, 3 * 7)
    inserted = [name for name in ATTENTION_POINTS if name in {layer.name for layer in model.layers}]
    assert inserted == ([] if phi == 0 else list(ATTENTION_POINTS))


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
@pytest.mark.parametrize("phi", range(5))
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
