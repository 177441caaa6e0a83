"""OpenCV DNN backend: a darknet cfg + weights give the same heads and boxes as our Keras model."""

from pathlib import Path

import keras
import numpy as np
import pytest

from benchmarks.bench_inference import dump_darknet_weights, randomise_batch_norms
from nets.yolo import YoloV4Tiny
from utils.backends import opencv_darknet_detector, yolo_heads_from_cfg
from utils.detector import Detector
from utils.model_data import ANCHORS_MASK, DARKNET_SCALE_X_Y, load_anchors

CFG = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "yolov4-tiny.cfg"
pytestmark = pytest.mark.skipif(not CFG.is_file(), reason="darknet reference cfg not available")


def test_cfg_heads_match_our_constants():
    heads = yolo_heads_from_cfg(CFG)
    assert heads["num_classes"] == 80 and heads["input_shape"] == (416, 416)
    assert heads["anchors_mask"] == [list(m) for m in ANCHORS_MASK]
    np.testing.assert_allclose(heads["anchors"], load_anchors())
    assert heads["scale_x_y"] == pytest.approx(DARKNET_SCALE_X_Y)
    assert heads["head_layers"] == ["conv_29", "conv_36"]


@pytest.mark.slow
def test_opencv_backend_agrees_with_keras(tmp_path):
    model = YoloV4Tiny(80)
    randomise_batch_norms(model)
    dump_darknet_weights(model, tmp_path / "random.weights")
    ours = Detector.from_model(model, input_shape=(128, 160))
    theirs = opencv_darknet_detector(CFG, tmp_path / "random.weights", input_shape=(128, 160))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(2)]
    batch, _ = ours.preprocess(images)
    for a, b in zip(ours.raw_outputs(batch), theirs.raw_outputs(batch), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    # Heads that ignore the image (zero kernels, fixed biases) give identical raw outputs, so the
    # detections must match exactly: the cfg-parsed anchors, masks and scale_x_y decode as ours.
    for name in ("conv_29", "conv_36"):
        layer = model.get_layer(name)
        layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
        layer.bias.assign(rng.normal(0, 2, layer.bias.shape).astype(np.float32))
    dump_darknet_weights(model, tmp_path / "heads.weights")
    ours = Detector.from_model(model, input_shape=(128, 160), conf=0.3)
    theirs = opencv_darknet_detector(CFG, tmp_path / "heads.weights", input_shape=(128, 160), conf=0.3)
    for a, b in zip(ours.detect(images), theirs.detect(images), strict=True):
        assert len(a) > 0
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
    assert keras.backend.backend() == "tensorflow"


def test_bad_darknet_files(tmp_path):
    (tmp_path / "junk.weights").write_bytes(b"\0" * 16)
    with pytest.raises(FileNotFoundError, match="missing.weights"):
        opencv_darknet_detector(CFG, tmp_path / "missing.weights")
    with pytest.raises(ValueError, match="junk.weights"):
        opencv_darknet_detector(CFG, tmp_path / "junk.weights")
    (tmp_path / "bad.cfg").write_text("[convolutional]\nfilters=3\n")
    with pytest.raises(ValueError, match="not a darknet cfg"):
        yolo_heads_from_cfg(tmp_path / "bad.cfg")
