"""Detector: known boxes through letterbox + decode + NMS, model loading, EXIF-rotated images."""

import math
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nets.model_data import ANCHORS_MASK, DARKNET_SCALE_X_Y, InputSizeError, load_anchors
from nets.yolo import YoloV4Tiny
from tests.layer_checks import randomise_batch_norms
from tests.stream_helpers import bright_cells_forward
from utils.data.images import load_image
from utils.inference.detector import Detections, Detector
from utils.inference.engine.loader import ModelLoadError, load_detector, load_model
from utils.inference.letterbox import letterbox_info
from utils.inference.precision import to_mixed_precision

ANCHORS = load_anchors()


def _known_heads(num_classes=2):
    """Raw heads for a 64x64 input with one confident box: P5 row 0, column 1, anchor 0, class 0,
    20x10 pixels centred at (48, 16) in the network input."""
    channels = 3 * (5 + num_classes)
    p5 = np.zeros((1, 2, 2, channels), np.float32)
    p4 = np.zeros((1, 4, 4, channels), np.float32)
    for head in (p5, p4):
        head[..., 4 :: 5 + num_classes] = -20.0  # no objects anywhere ...
    anchor = ANCHORS[ANCHORS_MASK[0][0]]
    p5[0, 0, 1, :7] = [0, 0, math.log(20 / anchor[0]), math.log(10 / anchor[1]), 20.0, 20.0, -20.0]  # ... but one
    return p5, p4


def _detector(forward, graph_forward=True, **kwargs):
    return Detector(
        forward,
        num_classes=2,
        anchors=ANCHORS,
        anchors_mask=ANCHORS_MASK,
        scale_x_y=DARKNET_SCALE_X_Y,
        input_shape=(64, 64),
        class_names=["a", "b"],
        graph_forward=graph_forward,
        **kwargs,
    )


@pytest.mark.slow
@pytest.mark.parametrize("graph_forward", [True, False])
def test_known_box_comes_back_in_original_coordinates(graph_forward):
    p5, p4 = _known_heads()
    if graph_forward:

        def forward(x):
            n = tf.shape(x)[0]
            return [tf.tile(tf.constant(p5), [n, 1, 1, 1]), tf.tile(tf.constant(p4), [n, 1, 1, 1])]
    else:

        def forward(x):
            assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.max() <= 1.0
            return [np.repeat(p5, len(x), 0), np.repeat(p4, len(x), 0)]

    detector = _detector(forward, graph_forward)
    image = np.zeros((50, 130, 3), np.uint8)  # letterboxed to 64x25 at y offset 19
    info = letterbox_info((50, 130), (64, 64))
    assert info.new_hw == (25, 64) and info.pad_xy == (0, 19)
    sx, sy = 64 / 130, 25 / 50
    expected = [38 / sx, 0.0, 58 / sx, (21 - 19) / sy]  # network box (38, 11, 58, 21); top clipped
    results = detector.detect([image, image, image], batch_size=2)
    assert len(results) == 3
    for dets in results:
        assert isinstance(dets, Detections) and len(dets) == 1
        np.testing.assert_allclose(dets.boxes[0], expected, rtol=1e-4, atol=1e-3)
        assert dets.boxes.dtype == np.float32 and dets.scores.dtype == np.float32 and dets.class_ids.dtype == np.int32
        np.testing.assert_allclose(dets.scores, [1 / (1 + math.exp(-20)) ** 2], rtol=1e-6)
        assert dets.class_ids.tolist() == [0]
    record = results[0].to_records(detector.class_names)[0]
    assert record["class_name"] == "a" and len(record["box"]) == 4
    detector.conf = 1.0  # thresholds apply without rebuilding
    assert len(detector.detect([image])[0]) == 0


def test_exif_rotated_jpeg_gives_the_boxes_of_its_upright_copy(tmp_path):
    upright = np.full((128, 192, 3), 70, np.uint8)
    upright[32:64, 128:160] = 255  # a white square at x 128..160, y 32..64 as displayed
    Image.fromarray(upright).save(tmp_path / "upright.jpg", quality=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": stored rotated 90 counter-clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(tmp_path / "rotated.jpg", quality=100, exif=exif)
    detector = Detector(
        bright_cells_forward,
        num_classes=1,
        anchors=ANCHORS,
        anchors_mask=ANCHORS_MASK,
        scale_x_y=DARKNET_SCALE_X_Y,
        input_shape=(128, 192),
    )
    straight, rotated = detector.detect([load_image(tmp_path / "upright.jpg"), load_image(tmp_path / "rotated.jpg")])
    assert len(straight) > 0
    np.testing.assert_allclose(rotated.boxes, straight.boxes, atol=1e-3)
    np.testing.assert_allclose(rotated.scores, straight.scores, atol=1e-4)
    best = straight.boxes[0]
    assert 128 <= (best[0] + best[2]) / 2 <= 160 and 32 <= (best[1] + best[3]) / 2 <= 64


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model = randomise_batch_norms(YoloV4Tiny(2, class_names=["cat", "dog"]))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return model, path


@pytest.mark.slow
def test_load_detector_folds_batch_norms_without_changing_outputs(saved_model):
    model, path = saved_model
    detector = load_detector(path, input_shape=(64, 96), conf=0.2, backend="keras")  # the TensorFlow graph
    assert detector.class_names == ["cat", "dog"] and detector.input_shape == (64, 96)
    images = [np.random.default_rng(i).integers(0, 256, (40 + 9 * i, 70, 3), dtype=np.uint8) for i in range(3)]
    batch, infos = detector.preprocess(images)
    reference = model(batch.astype(np.float32) / 255.0, training=False)
    for ours, ref in zip(detector.raw_outputs(batch), reference, strict=True):
        np.testing.assert_allclose(ours, np.asarray(ref), atol=1e-4)
    # Batched detection equals one image at a time.
    together = detector.detect(images, batch_size=2)
    for image, dets in zip(images, together, strict=True):
        [alone] = detector.detect([image])
        np.testing.assert_allclose(dets.boxes, alone.boxes, atol=1e-3)
        assert (dets.boxes[:, 2:] <= np.array(image.shape[1::-1])).all() and (dets.boxes >= 0).all()


def test_a_model_built_for_one_size_runs_at_another_with_its_weights():
    """train.py saves a model with a fixed input; the network is fully convolutional, so it runs at
    any multiple of 32 with the same weights (as the same weights in an any-size model do)."""
    model = YoloV4Tiny(1, input_shape=(64, 64, 3))
    randomise_batch_norms(model)
    assert Detector.from_model(model).input_shape == (64, 64)
    assert model.at_input_size((64, 64)) is model
    detector = Detector.from_model(model, input_shape=(96, 128))
    assert detector.input_shape == (96, 128) and detector.model.image_shape == (96, 128, 3)
    assert model.image_shape == (64, 64, 3)  # the model itself is not changed
    anywhere = YoloV4Tiny(1)
    anywhere.set_weights(model.get_weights())
    assert anywhere.at_input_size((96, 128)) is anywhere
    batch = np.random.default_rng(0).integers(0, 256, (2, 96, 128, 3), dtype=np.uint8)
    reference = anywhere(batch.astype(np.float32) / 255.0, training=False)
    for ours, ref in zip(detector.raw_outputs(batch), reference, strict=True):
        np.testing.assert_allclose(ours, np.asarray(ref), atol=1e-4)
    with pytest.raises(InputSizeError, match="multiples of 32"):
        Detector.from_model(model, input_shape=(100, 100))


@pytest.mark.slow
def test_mixed_bfloat16_copy_computes_in_bfloat16_with_float32_heads(saved_model):
    """The copy holds the same float32 weights, computes its convolutions in bfloat16 (so its heads
    differ from float32's by bfloat16 rounding: small, but not zero) and returns float32 heads."""
    model, _ = saved_model
    half = to_mixed_precision(model, "mixed_bfloat16")
    assert half is not model
    for name in ("conv_0", "bn_0", "conv_28"):
        layer = half.get_layer(name)
        assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32", name
    for a, b in zip(half.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    for ours, ref in zip(half(x), model(x), strict=True):
        assert ours.dtype == tf.float32
        error = np.abs(np.asarray(ours) - np.asarray(ref)).mean() / np.abs(np.asarray(ref)).mean()
        assert 1e-4 < error < 0.05  # float32 rounding alone is ~1e-7; bfloat16 has an 8-bit mantissa


def test_bad_weights_files_raise_clear_errors(saved_model, tmp_path):
    _, path = saved_model
    (tmp_path / "text.keras").write_text("hello")
    with zipfile.ZipFile(tmp_path / "zip.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save(tmp_path / "other.keras")
    (tmp_path / "yolo.weights").write_bytes(b"\0" * 64)
    for name, message in [
        ("missing.keras", "no such file"),
        ("text.keras", "not a .keras model"),
        ("zip.keras", "cannot load"),
        ("other.keras", "not a YoloV4Tiny"),
        ("yolo.weights", "darknet"),
    ]:
        with pytest.raises(ModelLoadError, match=name) as info:
            load_model(tmp_path / name)
        assert message in str(info.value)
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="3 class names"):
        load_detector(path, classes_path=tmp_path / "three.txt")
