"""Acceptance of "pluggable for real": blocks at any insertion points, started as the identity, keep
what darknet's weights compute.

Darknet's official yolov4-tiny.cfg (looked for in a `shared/reference/` folder above the project;
the tests skip without it) with random weights of its shapes: a model with blocks at every
insertion point, built with identity init and loaded with those weights, gives the plain converted
model's raw heads, and its mAP on the demo data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nets.yolo import INSERTION_POINTS
from utils.interop import darknet as dk

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL_CFG = next(
    (p / "shared" / "reference" / "yolov4-tiny.cfg" for p in ROOT.parents
     if (p / "shared" / "reference" / "yolov4-tiny.cfg").is_file()),
    None,
)
INPUT = (128, 128, 3)  # the demo's image size; the cfg's 416 would only be slower
EVERY_POINT = ",".join(INSERTION_POINTS)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    if OFFICIAL_CFG is None:
        pytest.skip("darknet's yolov4-tiny.cfg is not in a shared/reference/ folder above the project")
    tmp = tmp_path_factory.mktemp("official")
    weights = tmp / "random.weights"
    dk.write_weights(weights, dk.random_darknet_weights(dk.conv_specs(dk.parse_cfg(OFFICIAL_CFG)), seed=11))
    plain, report = dk.model_from_darknet(OFFICIAL_CFG, weights, input_shape=INPUT)
    assert report.complete
    images = np.random.default_rng(0).uniform(size=(2, *INPUT)).astype(np.float32)
    return {"weights": weights, "plain": plain, "images": images, "tmp": tmp}


def raw_heads(model, images):
    return [np.asarray(head) for head in model(images, training=False)]


@pytest.mark.parametrize("attention", ["se", "cbam", "eca", "ca", "sa"])
def test_blocks_at_every_point_start_as_the_identity_under_darknet_weights(official, attention):
    placed, report = dk.model_from_darknet(
        OFFICIAL_CFG, official["weights"], attention=attention, attention_at=EVERY_POINT, input_shape=INPUT
    )
    assert len(placed.attention_layers) == len(INSERTION_POINTS) == 8
    assert report.num_loaded_convs == 21 and set(report.fresh) == set(placed.attention_layers)
    for got, want in zip(raw_heads(placed, official["images"]), raw_heads(official["plain"], official["images"])):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_without_identity_init_the_same_blocks_change_the_heads(official):
    # What the identity start prevents: blocks of the papers' init (sigmoid gates ~0.5) at the same points.
    from nets.yolo import YoloV4Tiny

    plain = official["plain"]
    model = YoloV4Tiny(
        plain.num_classes, attention="se", attention_at=EVERY_POINT, anchors=plain.anchors, input_shape=INPUT
    )
    report = dk.load_darknet_weights(model, official["weights"], OFFICIAL_CFG)
    assert any("identity_init" in note for note in report.notes)
    got, want = raw_heads(model, official["images"])[0], raw_heads(plain, official["images"])[0]
    assert np.abs(got - want).max() > 0.1 * np.abs(want).max()


def test_weighted_fusion_starts_as_the_concatenation_under_darknet_weights(official):
    fused, report = dk.model_from_darknet(OFFICIAL_CFG, official["weights"], fusion="weighted", input_shape=INPUT)
    assert report.fresh == ["fusion_34"]
    p5, p4 = raw_heads(fused, official["images"])
    want_p5, want_p4 = raw_heads(official["plain"], official["images"])
    np.testing.assert_array_equal(p5, want_p5)  # the P5 head does not see the fusion
    # n / (n + eps) = 0.99995 times the concatenation, through conv_35 and its batch norm.
    np.testing.assert_allclose(p4, want_p4, rtol=0, atol=1e-3 * np.abs(want_p4).max())


@pytest.mark.slow
def test_placed_identity_blocks_keep_the_map_on_the_demo_data(official):
    """The issue's acceptance: the same mAP on the demo data within 0.005 (here equal: same heads)."""
    from utils.data.demo import write_demo_dataset
    from utils.evaluation.voc_eval import EvaluationLog, detect_split, evaluate_split, load_voc_split
    from utils.inference.detector import Detector

    root = write_demo_dataset(official["tmp"] / "demo", splits={"val": 24}, image_size=128)
    names = (root / "classes.txt").read_text().split()
    kwargs = dict(class_names=names, input_shape=INPUT, fresh_heads=True)  # 80-class heads -> the demo's
    plain, _ = dk.model_from_darknet(OFFICIAL_CFG, official["weights"], **kwargs)
    placed, _ = dk.model_from_darknet(
        OFFICIAL_CFG, official["weights"], attention="ca", attention_at=EVERY_POINT, **kwargs
    )
    for name in ("conv_29", "conv_36"):  # the same fresh heads in both
        placed.get_layer(name).set_weights(plain.get_layer(name).get_weights())
    maps = []
    for model in (plain, placed):
        detector = Detector.from_model(model, input_shape=INPUT[:2], conf=0.001, nms_iou=0.5, batch_size=8)
        log = EvaluationLog()
        split = load_voc_split(root, "val", names, log, progress=False)
        detections = detect_split(detector, split, log, progress=False)
        maps.append(evaluate_split(split, detections, names, log, {"weights": model.name}).result.map)
    assert abs(maps[0] - maps[1]) <= 0.005, maps


@pytest.mark.slow
def test_attention_mode_draws_placed_blocks_and_the_fusion(tmp_path):
    """predict.py --mode attention on a saved model with self-attention at the P5 head's input and a
    weighted fusion: one panel each, in network order (no darknet cfg needed)."""
    import json

    import predict
    from nets.yolo import YoloV4Tiny
    from utils.data.demo import write_demo_dataset

    data = write_demo_dataset(tmp_path / "data", splits={"val": 1}, image_size=64)
    model = YoloV4Tiny(3, attention="sa", attention_at="head_p5", fusion="weighted", input_shape=(64, 64, 3))
    model.save(tmp_path / "placed.keras")
    image = next(data.rglob("*.jpg"))
    argv = ["--weights", str(tmp_path / "placed.keras"), "--mode", "attention", "--source", str(image),
            "--output", str(tmp_path / "out"), "--json", str(tmp_path / "a.json")]  # fmt: skip
    assert predict.main(argv) == 0
    assert list((tmp_path / "out").glob("*_attention.*"))
    [record] = json.loads((tmp_path / "a.json").read_text())
    panels = [(p["point"], p["block"]) for p in record["panels"]]
    assert panels == [("attention_head_p5", "sa"), ("fusion_34", "fusion")]
    assert record["panels"][0]["what"] == "attention received (gamma 0.000)"


@pytest.mark.slow
@pytest.mark.parametrize("fmt, name", [("onnx", "m.onnx"), ("tflite", "m.tflite"), ("saved_model", "sm")])
def test_placed_self_attention_and_the_fusion_export_and_compute_the_same(tmp_path, fmt, name):
    from nets.yolo import YoloV4Tiny
    from utils.inference.engine.loader import load_detector
    from utils.interop.export import export_model

    model = YoloV4Tiny(3, attention="sa", attention_at="feat2,head_p4", fusion="weighted", class_names=list("abc"))
    model.get_layer("attention_feat2").gamma.assign(0.5)  # past the identity start, so the blocks count
    model.get_layer("attention_head_p4").gamma.assign(-0.4)
    model.get_layer("fusion_34").fusion_weights.assign([0.3, 1.2])
    image = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    export_model(model, fmt, tmp_path / name, input_hw=(64, 64))
    detector = load_detector(tmp_path / name, input_shape=(64, 64))
    for got, want in zip(detector.forward(image), model(image)):
        want = np.asarray(want)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 * np.abs(want).max())
