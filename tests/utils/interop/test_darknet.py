"""utils/interop/darknet.py against OpenCV's darknet importer, on random weights with non-trivial BN statistics.

OpenCV divides by sqrt(var + 1e-6) where darknet (and our model) use 1e-5 (see utils/interop/darknet.py);
the OpenCV comparisons run our model with OpenCV's epsilon so they test everything else exactly,
and one test checks that epsilon is the only gap.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from nets.backbone import BN_EPSILON
from nets.decode import decode_head
from nets.yolo import ATTENTION_POINTS, YoloV4Tiny
from utils.interop import darknet as dk

OFFICIAL_CFG = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "yolov4-tiny.cfg"
SMALL_CLASSES = 3
SIZES = [(128, 128), (96, 160)]  # square, non-square (height, width)


def random_image(hw, seed=0):
    """RGB float32 in [0, 1], (1, H, W, 3) - the model's input and, transposed, darknet's."""
    return np.random.default_rng(seed).random((1, *hw, 3), dtype=np.float32)


def opencv_net(cfg_text: str, weights_path: Path, tmp: Path):
    """An OpenCV DNN net whose [yolo] layers neither threshold nor suppress, so every score is comparable.

    OpenCV's region layer zeroes class scores <= `thresh` (default 0.2) and runs NMS when
    `nms_threshold` > 0 (default 0.4); these keys only affect OpenCV's post-processing.
    """
    cfg = dk.parse_cfg(text=cfg_text)
    for yolo in cfg.yolo_layers():
        yolo.options.update(thresh="0", nms_threshold="0")
    path = tmp / "opencv.cfg"
    path.write_text(cfg.to_text())
    net = cv2.dnn.readNetFromDarknet(str(path), str(weights_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def opencv_forward(net, image):
    """Raw heads (N, H, W, C) like ours, and the decoded [yolo] rows of each head."""
    net.setInput(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))
    names = [f"conv_{i}" for i in dk.HEAD_CONV_INDICES] + [f"yolo_{i}" for i in dk.YOLO_LAYER_INDICES]
    conv_p5, conv_p4, yolo_p5, yolo_p4 = net.forward(names)
    return [conv_p5.transpose(0, 2, 3, 1), conv_p4.transpose(0, 2, 3, 1)], [yolo_p5, yolo_p4]


def set_bn_epsilon(model, epsilon):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = epsilon


def relative_error(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(ours).max())


def assert_decoded_match(model, raw_heads, opencv_rows, hw):
    """Our decode_head of our raw heads against OpenCV's [yolo] output rows.

    OpenCV's rows, per head, are ordered (row, column, anchor) and hold normalised centre x, y, width,
    height (divided by the network input's width / height), sigmoid(objectness) and
    sigmoid(objectness) * sigmoid(class) (OpenCV multiplies them).
    """
    height, width = hw
    for raw, rows, mask in zip(raw_heads, opencv_rows, model.anchors_mask, strict=True):
        anchors = [model.anchors[i] for i in mask]
        boxes, obj_logit, cls_logit = (
            np.asarray(t) for t in decode_head(raw, anchors, model.num_classes, (height, width), model.scale_x_y)
        )
        grid_h, grid_w = raw.shape[1:3]
        rows = rows.reshape(grid_h, grid_w, len(mask), 5 + model.num_classes)
        scale = np.array([width, height, width, height], np.float32)
        np.testing.assert_allclose(boxes[0] / scale, rows[..., :4], rtol=1e-4, atol=1e-5)
        objectness = 1 / (1 + np.exp(-obj_logit[0]))
        np.testing.assert_allclose(objectness, rows[..., 4], rtol=1e-4, atol=1e-5)
        scores = objectness[..., None] / (1 + np.exp(-cls_logit[0]))
        np.testing.assert_allclose(scores, rows[..., 5:], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A cfg we write ourselves (3 classes, non-default anchors/masks/scale_x_y) and random weights for it."""
    tmp = tmp_path_factory.mktemp("small")
    anchors = [[12, 16], [19, 36], [40, 28], [36, 75], [76, 55], [72, 146]]
    cfg = dk.yolov4_tiny_cfg(SMALL_CLASSES, anchors, ((3, 4, 5), (0, 1, 2)), scale_x_y=1.1, input_hw=(128, 128))
    cfg_path, weights_path = tmp / "small.cfg", tmp / "small.weights"
    cfg_path.write_text(cfg.to_text())
    floats = dk.random_darknet_weights(dk.conv_specs(cfg), seed=1)
    dk.write_weights(weights_path, floats, dk.WeightsHeader(0, 2, 5, seen=3_000_000_000))
    model, report = dk.model_from_darknet(cfg_path, weights_path, input_shape=(None, None, 3))
    net = opencv_net(cfg.to_text(), weights_path, tmp)
    return {
        "tmp": tmp,
        "cfg": cfg_path,
        "weights": weights_path,
        "floats": floats,
        "model": model,
        "report": report,
        "net": net,
    }


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """darknet's own yolov4-tiny.cfg (80 classes) with random weights, an old-style header (int32 seen)."""
    if not OFFICIAL_CFG.exists():
        pytest.skip(f"{OFFICIAL_CFG} not present")
    tmp = tmp_path_factory.mktemp("official")
    cfg = dk.parse_cfg(OFFICIAL_CFG)
    weights_path = tmp / "yolov4-tiny.weights"
    floats = dk.random_darknet_weights(dk.conv_specs(cfg), seed=2)
    dk.write_weights(weights_path, floats, dk.WeightsHeader(0, 1, 0, seen=12345))
    model, report = dk.model_from_darknet(OFFICIAL_CFG, weights_path, input_shape=(None, None, 3))
    net = opencv_net(OFFICIAL_CFG.read_text(), weights_path, tmp)
    return {"tmp": tmp, "weights": weights_path, "floats": floats, "model": model, "report": report, "net": net}


# ----------------------------------------------------------------------------------------- cfg


def test_official_cfg_parses_to_our_architecture():
    if not OFFICIAL_CFG.exists():
        pytest.skip(f"{OFFICIAL_CFG} not present")
    cfg = dk.parse_cfg(OFFICIAL_CFG)
    assert len(cfg.layers) == 38 and cfg.layers[30].type == "yolo" and cfg.layers[30].index == 30
    assert cfg.layers[3].options == {"layers": "-1", "groups": "2", "group_id": "1"}
    settings = dk.check_architecture(cfg)
    assert settings.num_classes == 80
    assert settings.anchors_mask == [[3, 4, 5], [1, 2, 3]]
    assert settings.scale_x_y == pytest.approx(1.05)
    assert settings.anchors[4] == [135.0, 169.0] and settings.input_hw == (416, 416)
    specs = dk.conv_specs(cfg)
    assert [s.index for s in specs] == [0, 1, 2, 4, 5, 7, 10, 12, 13, 15, 18, 20, 21, 23, 26, 27, 28, 29, 32, 35, 36]
    assert dk.expected_floats(specs) == 6_062_814  # = YoloV4Tiny(80) parameters (foundation's invariant)
    # The cfg we generate describes the same network, layer for layer.
    ours = dk.yolov4_tiny_cfg(80)
    assert [s.type for s in ours.layers] == [s.type for s in cfg.layers]
    assert dk.conv_specs(ours) == specs


def test_generated_cfg_text_round_trips():
    cfg = dk.yolov4_tiny_cfg(7, input_hw=(320, 256))
    again = dk.parse_cfg(text=cfg.to_text())
    assert again.to_text() == cfg.to_text()
    assert (again.height, again.width) == (320, 256)
    assert dk.check_architecture(again).num_classes == 7


# ---------------------------------------------------------------------------- OpenCV agreement


@pytest.mark.parametrize("hw", SIZES, ids=["square", "non-square"])
def test_small_cfg_matches_opencv(small, hw):
    model, image = small["model"], random_image(hw, seed=hw[1])
    theirs_raw, theirs_rows = opencv_forward(small["net"], image)
    set_bn_epsilon(model, dk.OPENCV_BN_EPSILON)
    try:
        ours = [np.asarray(o) for o in model(image)]
    finally:
        set_bn_epsilon(model, BN_EPSILON)
    for o, t in zip(ours, theirs_raw, strict=True):
        assert o.shape == t.shape
        assert np.abs(o).max() > 0.5  # activations stay O(1): the comparison is not of near-zeros
        assert relative_error(o, t) < 1e-4
    assert_decoded_match(model, ours, theirs_rows, hw)


@pytest.mark.parametrize("hw", SIZES, ids=["square", "non-square"])
def test_official_cfg_matches_opencv(official, hw):
    model, image = official["model"], random_image(hw, seed=7)
    theirs_raw, theirs_rows = opencv_forward(official["net"], image)
    set_bn_epsilon(model, dk.OPENCV_BN_EPSILON)
    try:
        ours = [np.asarray(o) for o in model(image)]
    finally:
        set_bn_epsilon(model, BN_EPSILON)
    for o, t in zip(ours, theirs_raw, strict=True):
        assert o.shape == t.shape
        assert relative_error(o, t) < 1e-4
    assert_decoded_match(model, ours, theirs_rows, hw)


def test_batch_norm_epsilon_is_the_only_gap_to_opencv(small):
    """With darknet's epsilon (ours, 1e-5) the gap to OpenCV (1e-6) is many times the eps-matched one."""
    model, image = small["model"], random_image((128, 128), seed=3)
    theirs, _ = opencv_forward(small["net"], image)
    darknet_eps = max(relative_error(np.asarray(o), t) for o, t in zip(model(image), theirs, strict=True))
    set_bn_epsilon(model, dk.OPENCV_BN_EPSILON)
    try:
        opencv_eps = max(relative_error(np.asarray(o), t) for o, t in zip(model(image), theirs, strict=True))
    finally:
        set_bn_epsilon(model, BN_EPSILON)
    assert opencv_eps < 1e-5 and darknet_eps > 5 * opencv_eps


# ------------------------------------------------------------------------------------- headers


def test_weights_headers_both_versions(small, official, tmp_path):
    header, floats = dk.read_weights(small["weights"])
    assert header == dk.WeightsHeader(0, 2, 5, 3_000_000_000) and header.seen_is_int64
    np.testing.assert_array_equal(floats, small["floats"])
    header, floats = dk.read_weights(official["weights"])
    assert header == dk.WeightsHeader(0, 1, 0, 12345) and not header.seen_is_int64 and header.num_bytes == 16
    np.testing.assert_array_equal(floats, official["floats"])
    assert "version 0.1.0" in str(official["report"]) and "version 0.2.5" in str(small["report"])
    # The same floats behind an old header load into OpenCV and into our model identically.
    old = tmp_path / "old.weights"
    dk.write_weights(old, small["floats"], dk.WeightsHeader(0, 1, 0, seen=7))
    assert old.stat().st_size == small["weights"].stat().st_size - 4
    image = random_image((96, 96))
    net_old = opencv_net(small["cfg"].read_text(), old, tmp_path)
    for a, b in zip(opencv_forward(net_old, image)[0], opencv_forward(small["net"], image)[0], strict=True):
        np.testing.assert_array_equal(a, b)
    model = YoloV4Tiny(SMALL_CLASSES, anchors=small["model"].anchors, anchors_mask=small["model"].anchors_mask)
    dk.load_darknet_weights(model, old, small["cfg"])
    for a, b in zip(model.get_weights(), small["model"].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------- round trip


def randomise(model, seed=0):
    """Non-trivial values everywhere, positive variances."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = [rng.normal(0, 0.1, w.shape).astype(np.float32) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            values[3] = rng.uniform(0.5, 2.0, values[3].shape).astype(np.float32)
        if values:
            layer.set_weights(values)


def test_keras_darknet_keras_round_trip_is_exact(tmp_path):
    model = YoloV4Tiny(
        2,
        anchors=[[5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]],
        anchors_mask=((3, 4, 5), (0, 1, 2)),
        input_shape=(96, 160, 3),
        class_names=["cat", "dog"],
        scale_x_y=1.2,
    )
    randomise(model)
    cfg_path, weights_path = tmp_path / "m.cfg", tmp_path / "m.weights"
    dk.save_darknet(model, cfg_path, weights_path)
    header, floats = dk.read_weights(weights_path)
    assert header == dk.WeightsHeader() and floats.size == model.count_params()

    back, report = dk.model_from_darknet(cfg_path, weights_path, class_names=["cat", "dog"])
    assert report.complete and report.num_loaded_convs == 21
    assert back.get_config() | {"name": model.name} == model.get_config()
    for a, b in zip(model.get_weights(), back.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # ... and writing it again gives the same bytes.
    dk.save_darknet(back, tmp_path / "n.cfg", tmp_path / "n.weights")
    assert (tmp_path / "n.cfg").read_text() == cfg_path.read_text()
    assert (tmp_path / "n.weights").read_bytes() == weights_path.read_bytes()


def test_save_darknet_refuses_attention_models(tmp_path):
    model = YoloV4Tiny(2, attention="se")
    with pytest.raises(ValueError, match="attention"):
        dk.save_darknet(model, tmp_path / "x.cfg", tmp_path / "x.weights")
    with pytest.raises(ValueError, match="--fusion concat"):
        dk.save_darknet(YoloV4Tiny(2, fusion="weighted"), tmp_path / "x.cfg", tmp_path / "x.weights")
    assert not (tmp_path / "x.weights").exists()


# ---------------------------------------------------------------------------- attention, classes


@pytest.mark.parametrize("attention", ["se", "cbam", "eca", "ca"])
def test_load_into_attention_model(small, attention):
    model = YoloV4Tiny(SMALL_CLASSES, attention=attention, anchors=small["model"].anchors)
    before = {name: [np.array(w) for w in model.get_layer(name).get_weights()] for name in ATTENTION_POINTS}
    report = dk.load_darknet_weights(model, small["weights"], small["cfg"])
    assert report.num_loaded_convs == report.num_convs == 21
    assert sorted(report.fresh) == sorted(ATTENTION_POINTS) and not report.skipped and not report.complete
    assert "attention_feat1" in str(report) and "21 of 21" in str(report)
    for name, values in before.items():  # attention kept its fresh initialisation
        for a, b in zip(values, model.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    for name in ("conv_0", "bn_23", "conv_29", "conv_36"):  # and every darknet layer loaded
        for a, b in zip(model.get_layer(name).get_weights(), small["model"].get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("with_cfg", [True, False], ids=["cfg", "no-cfg"])
def test_class_count_change_loads_backbone_and_neck(small, with_cfg):
    model = YoloV4Tiny(5, attention="eca", anchors=small["model"].anchors, anchors_mask=small["model"].anchors_mask)
    heads = {name: [np.array(w) for w in model.get_layer(name).get_weights()] for name in ("conv_29", "conv_36")}
    report = dk.load_darknet_weights(model, small["weights"], small["cfg"] if with_cfg else None)
    assert (report.weights_classes, report.model_classes) == (SMALL_CLASSES, 5)
    assert sorted(report.skipped) == ["conv_29", "conv_36"] and report.num_loaded_convs == 19
    assert set(report.fresh) == set(ATTENTION_POINTS) | {"conv_29", "conv_36"}
    text = str(report)
    assert "weights have 3, the model 5" in text and "heads start fresh" in text and "conv_29" in text
    for name, values in heads.items():
        for a, b in zip(values, model.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    for name in ("conv_28", "bn_28", "conv_35", "bn_35"):
        for a, b in zip(model.get_layer(name).get_weights(), small["model"].get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_report_notes_decoding_settings_that_differ(small):
    model = YoloV4Tiny(SMALL_CLASSES)  # darknet's default anchors, masks and scale_x_y
    report = dk.load_darknet_weights(model, small["weights"], small["cfg"])
    assert report.num_loaded_convs == 21
    text = str(report)
    assert (
        "anchors differ" in text and "anchor masks differ" in text and "scale_x_y differ: cfg 1.1, model 1.05" in text
    )


def test_coco_weights_into_20_classes(official):
    model = YoloV4Tiny(20, attention="cbam")
    report = dk.load_darknet_weights(model, official["weights"])  # no cfg: 80 classes inferred from the size
    assert (report.weights_classes, report.model_classes) == (80, 20)
    assert sorted(report.skipped) == ["conv_29", "conv_36"]
    assert "255 filters" in report.skipped["conv_29"]


# -------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("delta", [-7, 5], ids=["truncated", "over-long"])
@pytest.mark.parametrize("with_cfg", [True, False], ids=["cfg", "no-cfg"])
def test_wrong_size_weights_say_expected_and_found(small, tmp_path, delta, with_cfg):
    floats = small["floats"]
    bad = tmp_path / "bad.weights"
    dk.write_weights(bad, floats[:delta] if delta < 0 else np.concatenate([floats, np.ones(delta, np.float32)]))
    model = YoloV4Tiny(SMALL_CLASSES, anchors=small["model"].anchors, anchors_mask=small["model"].anchors_mask)
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(dk.DarknetWeightsSizeError) as err:
        dk.load_darknet_weights(model, bad, small["cfg"] if with_cfg else None)
    message = str(err.value)
    assert str(bad) in message and f"expected {floats.size:,}" in message
    assert f"found {floats.size + delta:,}" in message
    assert ("truncated" if delta < 0 else "over-long") in message
    for a, b in zip(before, model.get_weights(), strict=True):  # nothing half-loaded
        np.testing.assert_array_equal(a, b)


def test_partial_float_is_reported(small, tmp_path):
    bad = tmp_path / "odd.weights"
    bad.write_bytes(small["weights"].read_bytes()[:-2])
    with pytest.raises(dk.DarknetWeightsSizeError, match="whole number of float32"):
        dk.read_weights(bad)


def small_cfg_text(small) -> str:
    return small["cfg"].read_text()


def test_unsupported_layer_type(small):
    text = small_cfg_text(small).replace("[maxpool]", "[shortcut]\nfrom=-3\nactivation=linear\n\n[maxpool]", 1)
    with pytest.raises(dk.UnsupportedLayerError, match=r"layer 9 \[shortcut\] \(line \d+\).*not supported"):
        dk.parse_cfg(text=text)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda cfg: cfg.layers[5].options.update(filters="48"), r"layer 5 \[convolutional\].*filters=48.*filters=32"),
        (lambda cfg: cfg.layers[3].options.update(group_id="0"), r"layer 3 \[route\].*group_id=0"),
        (lambda cfg: cfg.layers[34].options.update(layers="-1,22"), r"layer 34 \[route\].*\[33, 22\].*\[33, 23\]"),
        (lambda cfg: cfg.layers[28].options.update(activation="mish"), r"layer 28 \[convolutional\].*activation"),
        (lambda cfg: cfg.layers[29].options.update(filters="30"), r"layer 29 \[convolutional\].*filters=30.*=24"),
        (lambda cfg: cfg.layers[37].options.update(new_coords="1"), r"layer 37 \[yolo\].*new_coords"),
        (lambda cfg: cfg.layers.pop(), r"ends after layer 36"),
        (lambda cfg: cfg.layers.insert(9, dk.CfgSection("upsample", {"stride": "2"})), r"\[maxpool\] here"),
    ],
    ids=["filters", "group", "route", "activation", "head", "new_coords", "missing", "extra"],
)
def test_architecture_mismatch_names_the_section(small, edit, expected):
    cfg = dk.parse_cfg(text=small_cfg_text(small))
    edit(cfg)
    cfg = dk.parse_cfg(text=cfg.to_text())  # re-number and re-line as a file would be
    with pytest.raises(dk.ArchitectureMismatchError, match=expected):
        dk.check_architecture(cfg)


def test_class_names_must_match_cfg(small):
    with pytest.raises(ValueError, match="classes=3 but 2 class names"):
        dk.model_from_darknet(small["cfg"], small["weights"], class_names=["a", "b"])


def test_report_of_complete_load(small):
    report = small["report"]
    assert report.complete and report.num_loaded_convs == 21
    assert "Every layer with weights came from darknet" in str(report)


@pytest.mark.parametrize(
    ("classes", "input_hw", "error", "expected"),
    [
        (20, (416, 416), dk.DarknetWeightsSizeError, r"bad.weights: truncated: expected 5,9"),
        (300_000, (416, 416), dk.ArchitectureMismatchError, r"classes=300000, not 1 to 10000"),
        (80, (32_000, 32_000), dk.ArchitectureMismatchError, r"height=32000 is not a multiple of 32 from 32 to 4096"),
    ],
    ids=["weights-too-small", "classes-300000", "width-32000"],
)
def test_a_cfg_is_checked_against_its_weights_before_a_model_is_built(
    tmp_path, monkeypatch, classes, input_hw, error, expected
):
    """A cfg asking for 300,000 classes or a 32000x32000 input with a 100-byte weights file took
    6.4 GB and 21 GB before the weights' size was checked; now nothing is built (a model built
    here fails the test instead of taking the memory)."""
    import nets.yolo

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the cfg and its weights were checked")

    monkeypatch.setattr(nets.yolo, "YoloV4Tiny", no_model)
    cfg_path, weights = tmp_path / "bad.cfg", tmp_path / "bad.weights"
    cfg_path.write_text(dk.yolov4_tiny_cfg(classes, input_hw=input_hw).to_text())
    dk.write_weights(weights, np.zeros(20, np.float32))  # 100 bytes with the header
    assert weights.stat().st_size == 100
    with pytest.raises(error, match=expected):
        dk.model_from_darknet(cfg_path, weights)
