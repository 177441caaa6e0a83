"""Darknet cfg + weights through the Detector: the same detections as the Keras model they came from."""

import numpy as np
import pytest

from nets.yolo import YoloV4Tiny
from utils.inference.detector import Detector
from utils.inference.engine.loader import ModelLoadError, load_detector
from utils.interop.darknet import save_darknet


@pytest.mark.slow
def test_darknet_files_detect_like_the_model_they_were_written_from(tmp_path):
    model = YoloV4Tiny(3, input_shape=(96, 128, 3), class_names=["a", "b", "c"])
    rng = np.random.default_rng(0)
    # Heads that ignore the image (zero kernels, random biases), so detections exist and must match.
    for name in ("conv_29", "conv_36"):
        layer = model.get_layer(name)
        layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
        layer.bias.assign(rng.normal(0, 2, layer.bias.shape).astype(np.float32))
    save_darknet(model, tmp_path / "m.cfg", tmp_path / "m.weights")
    ours = Detector.from_model(model, conf=0.3)
    theirs = load_detector(tmp_path / "m.weights", cfg_path=tmp_path / "m.cfg", conf=0.3)
    assert theirs.input_shape == (96, 128)  # the cfg's [net] size
    images = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(2)]
    for a, b in zip(ours.detect(images), theirs.detect(images), strict=True):
        assert len(a) > 0
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
    resized = load_detector(tmp_path / "m.weights", cfg_path=tmp_path / "m.cfg", input_shape=(64, 64))
    assert resized.input_shape == (64, 64)


def test_bad_darknet_files_name_the_file(tmp_path):
    model = YoloV4Tiny(3, input_shape=(64, 64, 3))
    save_darknet(model, tmp_path / "m.cfg", tmp_path / "m.weights")
    (tmp_path / "junk.weights").write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match="missing.weights"):
        load_detector(tmp_path / "missing.weights", cfg_path=tmp_path / "m.cfg")
    with pytest.raises(ModelLoadError, match="junk.weights"):
        load_detector(tmp_path / "junk.weights", cfg_path=tmp_path / "m.cfg")
    (tmp_path / "bad.cfg").write_text("[convolutional]\nfilters=3\n")
    with pytest.raises(ModelLoadError, match="bad.cfg"):
        load_detector(tmp_path / "m.weights", cfg_path=tmp_path / "bad.cfg")
