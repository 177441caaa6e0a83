"""Export parity: SavedModel, ONNX and TFLite (fp32, fp16, int8) against the Keras model, on
demo-set images (coloured shapes on a textured background), through the detector's backends."""

import logging
import shutil

import numpy as np
import pytest

from tests.export_helpers import CONF, INPUT_HW
from utils.boxes import box_iou
from utils.data.voc import parse_voc_xml
from utils.defaults import MERGE_IOU
from utils.evaluation.metrics import GroundTruth, evaluate_detections
from utils.inference.detector import Detector
from utils.inference.engine.loader import ModelLoadError, load_detector
from utils.interop.backends import infer_backend, load_backend
from utils.interop.export import (
    ExportError,
    check_export_options,
    export_model,
)
from utils.interop.metadata import metadata_path, read_metadata


def _export(keras_file, out_dir, name, *flags):
    """The artefact as a user makes it: `python export.py --weights model.keras ...`."""
    import export

    path = out_dir / name
    argv = ["--weights", str(keras_file), "--input-size", f"{INPUT_HW[0]}x{INPUT_HW[1]}", "--output", str(path)]
    assert export.main([*argv, *flags]) == 0
    return path


@pytest.fixture(scope="module")
def saved_model_path(keras_file, out_dir):
    return _export(keras_file, out_dir, "saved_model", "--format", "saved_model", "--include-nms")


@pytest.fixture(scope="module")
def onnx_path(keras_file, out_dir):
    return _export(keras_file, out_dir, "model.onnx", "--format", "onnx")


@pytest.fixture(scope="module")
def tflite_path(keras_file, out_dir):
    return _export(keras_file, out_dir, "model.tflite", "--format", "tflite")


@pytest.fixture(scope="module")
def tflite_fp16_path(keras_file, out_dir):
    return _export(keras_file, out_dir, "model_fp16.tflite", "--format", "tflite", "--fp16")


@pytest.fixture(scope="module")
def tflite_int8_path(keras_file, out_dir, demo_root):
    flags = ["--format", "tflite", "--int8", "--calib-data", str(demo_root)]
    return _export(keras_file, out_dir, "model_int8.tflite", *flags)


@pytest.fixture(scope="module")
def onnx_fp16_path(keras_file, out_dir):
    return _export(keras_file, out_dir, "model_fp16.onnx", "--format", "onnx", "--fp16")


@pytest.fixture(scope="module")
def onnx_int8_path(keras_file, out_dir, demo_root):
    return _export(keras_file, out_dir, "model_int8.onnx", "--format", "onnx", "--int8", "--calib-data", str(demo_root))


@pytest.fixture(scope="module")
def onnx_nms_path(dynamic_paths):
    return dynamic_paths["onnx"]  # --include-nms --dynamic: one export serves both tests


@pytest.fixture(scope="module")
def tflite_nms_path(keras_file, out_dir):
    return _export(keras_file, out_dir, "model_nms.tflite", "--format", "tflite", "--include-nms")


FP32_PATHS = ["saved_model_path", "onnx_path", "tflite_path"]


def _relative_error(got, want):
    return max(float(np.abs(g - w).max()) / float(np.abs(w).max()) for g, w in zip(got, want, strict=True))


def _same_detections(got, want, atol_px=0.01, atol_score=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g) == len(w)
        np.testing.assert_array_equal(g.class_ids, w.class_ids)
        np.testing.assert_allclose(g.scores, w.scores, atol=atol_score)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=atol_px)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", FP32_PATHS)
def test_fp32_raw_outputs_match_keras(fixture, request, keras_detector):
    detector, inputs = keras_detector
    forward, metadata = load_backend(request.getfixturevalue(fixture))
    assert metadata["precision"] == "fp32"
    want = [np.asarray(h) for h in detector.model(inputs, training=False)]
    got = [np.asarray(h) for h in forward(inputs)]
    assert [g.shape for g in got] == [w.shape for w in want]
    assert _relative_error(got, want) < 1e-5  # measured 2e-6 (SavedModel, ONNX) to 5e-6 (TFLite): docs/export.md


@pytest.mark.slow
@pytest.mark.parametrize("fixture", FP32_PATHS)
def test_fp32_detections_match_keras(fixture, request, keras_detector, demo_images):
    detector, _ = keras_detector
    exported = load_detector(request.getfixturevalue(fixture), conf=CONF)
    assert exported.class_names == detector.class_names and exported.input_shape == INPUT_HW
    want = detector.detect(demo_images[1])
    assert sum(len(d) for d in want) >= 10, "the test model should detect something on most images"
    _same_detections(exported.detect(demo_images[1]), want)


# docs/export.md quotes these bounds (measured: TFLite fp16 1.3e-3, ONNX fp16 1.6e-3, int8 0.16 of the output scale).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "precision", "bound"),
    [("tflite_fp16_path", "fp16", 3e-3), ("onnx_fp16_path", "fp16", 3e-3), ("tflite_int8_path", "int8", 0.3)],
)
def test_reduced_precision_raw_outputs_close(fixture, precision, bound, request, keras_detector):
    detector, inputs = keras_detector
    path = request.getfixturevalue(fixture)
    forward, metadata = load_backend(path)
    assert metadata["precision"] == precision
    if path.suffix == ".onnx":  # float16 weights and convolutions, not only float16 storage
        import onnx

        graph = onnx.load(str(path)).graph
        assert {"Conv"} <= {n.op_type for n in graph.node}
        conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv"}
        dtypes = [t.data_type for t in graph.initializer if t.name in conv_weights]
        # Every convolution but the two 1x1 heads, which stay float32 as under mixed precision (nets.yolo).
        assert len(dtypes) == len(conv_weights) and dtypes.count(onnx.TensorProto.FLOAT16) == len(dtypes) - 2
    want = [np.asarray(h) for h in detector.model(inputs, training=False)]
    assert _relative_error(forward(inputs), want) < bound


def _as_eval(ids, dets):
    return dict(zip(ids, dets))  # a detector's Detections are what evaluate_detections takes


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tflite_int8_path", "onnx_int8_path"])
def test_int8_detections_overlap_fp32(fixture, request, keras_detector, demo_images, demo_root):
    """int8 finds the fp32 detections: every fp32 detection has an int8 one of its class nearby,
    and the mAP of int8 against fp32 (fp32 detections taken as the ground truth) is high."""
    detector, _ = keras_detector
    ids, images = demo_images
    int8 = load_detector(request.getfixturevalue(fixture), conf=0.05)
    assert int8.metadata["precision"] == "int8" and int8.metadata["calibration"]["images"] == 12
    fp32_dets = detector.detect(images)
    int8_dets = int8.detect(images)
    best_ious = []
    for f, q in zip(fp32_dets, int8_dets):
        for box, cls in zip(f.boxes, f.class_ids):
            same = q.boxes[q.class_ids == cls]
            best_ious.append(box_iou(box[None], same).max() if len(same) else 0.0)
    best_ious = np.asarray(best_ious)
    as_truth = {i: GroundTruth(d.boxes, d.class_ids) for i, d in zip(ids, fp32_dets)}
    agreement = evaluate_detections(_as_eval(ids, int8_dets), as_truth, num_classes=3)
    # Against the real boxes of the demo set (a random model: both near zero; the difference is the point).
    truth = {}
    for i in ids:
        annotation = parse_voc_xml(demo_root / "Annotations" / f"{i}.xml", ["circle", "square", "triangle"])
        truth[i] = GroundTruth(annotation.boxes, annotation.class_ids, annotation.difficult)
    low = Detector.from_model(detector.model, input_shape=INPUT_HW, conf=0.05)
    map_fp32 = evaluate_detections(_as_eval(ids, low.detect(images)), truth, num_classes=3).map
    map_int8 = evaluate_detections(_as_eval(ids, int8_dets), truth, num_classes=3).map
    print(
        f"\n{fixture} int8 vs fp32: {len(best_ious)} fp32 detections, mean best IoU {best_ious.mean():.3f}, "
        f"{(best_ious >= 0.5).mean():.1%} matched at IoU 0.5, agreement mAP@0.5 {agreement.map:.3f}; "
        f"mAP@0.5 on the demo boxes: fp32 {map_fp32:.4f}, int8 {map_int8:.4f}, difference {map_int8 - map_fp32:+.4f}"
    )
    assert len(best_ious) >= 10
    assert (best_ious >= 0.5).mean() >= 0.97  # measured 99% (115 of 116); docs/export.md has it
    assert agreement.map >= 0.9  # measured 0.96


@pytest.mark.slow
def test_saved_model_nms_signature_matches_detector(saved_model_path, keras_detector, demo_images):
    import tensorflow as tf

    from utils.inference.letterbox import unletterbox_boxes

    detector, _ = keras_detector
    images = demo_images[1]
    batch, infos = detector.preprocess(images)
    loaded = tf.saved_model.load(str(saved_model_path))
    out = loaded.signatures["detect"](
        images=tf.constant(batch.astype(np.float32) / 255.0),
        score_threshold=tf.constant(CONF),
        iou_threshold=tf.constant(detector.nms_iou),
    )
    want = detector.detect(images)
    for i, (info, w) in enumerate(zip(infos, want)):
        n = int(out["num_detections"][i])
        assert n == len(w)
        np.testing.assert_array_equal(out["classes"][i, :n], w.class_ids)
        np.testing.assert_allclose(out["scores"][i, :n], w.scores, atol=1e-4)
        np.testing.assert_allclose(unletterbox_boxes(out["boxes"][i, :n].numpy(), info), w.boxes, atol=0.01)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "fmt", "precision"),
    [
        ("saved_model_path", "saved_model", "fp32"),
        ("onnx_path", "onnx", "fp32"),
        ("tflite_path", "tflite", "fp32"),
        ("tflite_fp16_path", "tflite", "fp16"),
        ("tflite_int8_path", "tflite", "int8"),
    ],
)
def test_metadata_travels_with_the_artefact(fixture, fmt, precision, request):
    """What export.py's --format / --fp16 / --int8 made, and what travels with it."""
    path = request.getfixturevalue(fixture)
    metadata = read_metadata(path)
    assert (metadata["format"], metadata["precision"]) == (fmt, precision)
    assert metadata["class_names"] == ["circle", "square", "triangle"]
    assert metadata["input_shape"] == list(INPUT_HW)
    assert metadata["anchors_mask"] == [[3, 4, 5], [1, 2, 3]]
    assert len(metadata["anchors"]) == 6 and metadata["scale_x_y"] == pytest.approx(1.05)
    assert metadata_path(path).is_file()


@pytest.mark.slow
def test_onnx_metadata_inside_the_file(onnx_path, tmp_path):
    alone = tmp_path / "alone.onnx"
    shutil.copy(onnx_path, alone)  # no alone.onnx.json next to it
    assert read_metadata(alone)["class_names"] == ["circle", "square", "triangle"]
    assert load_detector(alone).class_names == ["circle", "square", "triangle"]


@pytest.mark.slow
def test_backend_from_path_and_errors(saved_model_path, onnx_path, tflite_path, tmp_path):
    assert infer_backend(saved_model_path) == "saved_model"
    assert infer_backend(onnx_path) == "onnx"
    assert infer_backend(tflite_path) == "tflite"
    assert infer_backend(tmp_path / "x.keras") == "keras"
    with pytest.raises(ModelLoadError, match="exported for a 128x128 input"):
        load_detector(onnx_path, input_shape=(416, 416))
    with pytest.raises(ModelLoadError, match="--half"):
        load_detector(tflite_path, half=True)
    with pytest.raises(ModelLoadError, match="without saved_model.pb"):
        load_detector(tmp_path)
    bare = tmp_path / "bare.tflite"
    shutil.copy(tflite_path, bare)
    with pytest.raises(ModelLoadError, match="no metadata"):
        load_detector(bare)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    shutil.copy(metadata_path(onnx_path), metadata_path(broken))
    with pytest.raises(ModelLoadError, match="broken.onnx"):
        load_detector(broken)
    # --backend forces a runtime: the ONNX file through the TFLite interpreter fails naming it.
    with pytest.raises(ModelLoadError, match="model.onnx"):
        load_detector(onnx_path, backend="tflite")


@pytest.mark.parametrize(
    ("fmt", "precision", "nms", "match"),
    [
        ("saved_model", "fp16", False, "--fp16 is not supported with --format saved_model"),
        ("saved_model", "int8", False, "--int8 is not supported"),
        ("coreml", "fp32", False, "unknown format"),
    ],
)
def test_unsupported_combinations(fmt, precision, nms, match):
    with pytest.raises(ExportError, match=match):
        check_export_options(fmt, precision, nms)
    with pytest.raises(ExportError, match="--dynamic is not supported with --format tflite"):
        check_export_options("tflite", "fp32", False, dynamic=True)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["onnx_nms_path", "tflite_nms_path"])
def test_nms_inside_matches_detector(fixture, request, keras_detector, demo_images, caplog, monkeypatch):
    """--include-nms: the graph's own decoding + NMS (ONNX NonMaxSuppression; TFLite's builtin
    NON_MAX_SUPPRESSION_V5) and box merge gives the Keras Detector's detections, used as is by
    load_detector; asked for another merge, the detector says it does not apply."""
    detector, _ = keras_detector
    path = request.getfixturevalue(fixture)
    metadata = read_metadata(path)
    assert metadata["include_nms"] and metadata["nms_outputs"] == ["boxes", "scores", "classes", "valid"]
    assert metadata["merge_iou"] == MERGE_IOU == detector.merge_iou
    monkeypatch.setattr(logging.getLogger("yolov4_tiny"), "propagate", True)  # the fixture's export.main unset it
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        load_detector(path, conf=CONF, merge_iou=1.0)
    assert f"exported merging boxes at IoU {MERGE_IOU:g}; --merge-iou 1 does not apply" in caplog.text
    exported = load_detector(path, conf=CONF)
    assert exported.nms_forward is not None
    images = demo_images[1]
    want = detector.detect(images)
    assert sum(len(d) for d in want) >= 10 and sum(len(d) > 1 for d in want) >= 2
    _same_detections(exported.detect(images), want)
    if fixture == "onnx_nms_path":
        # Fewer detections kept than exported: the first rows, as the Detector's NMS with that K.
        few = Detector.from_model(detector.model, input_shape=INPUT_HW, conf=CONF, max_detections=2).detect(images)
        _same_detections(load_detector(path, conf=CONF, max_detections=2).detect(images), few)
    with pytest.raises(ModelLoadError, match="keeping 100 detections"):
        load_detector(path, max_detections=101)
    if fixture == "tflite_nms_path":
        assert b"Flex" not in path.read_bytes()  # built-in ops only (Flex ops are named in the file)


@pytest.mark.slow
def test_export_argument_errors(keras_detector, tmp_path):
    model = keras_detector[0].model
    with pytest.raises(ExportError, match="needs --calib-data"):
        export_model(model, "tflite", tmp_path / "m.tflite", precision="int8")
    with pytest.raises(ExportError, match="no Annotations"):
        export_model(model, "tflite", tmp_path / "m.tflite", precision="int8", calib_data=tmp_path)
    with pytest.raises(ExportError, match="must end with .onnx"):
        export_model(model, "onnx", tmp_path / "m.tflite")
    with pytest.raises(ExportError, match="multiples of 32"):
        export_model(model, "onnx", tmp_path / "m.onnx", input_hw=(100, 100))
    with pytest.raises(ExportError, match="class names"):
        export_model(model, "onnx", tmp_path / "m.onnx", class_names=["a"])
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a SavedModel directory"):
        export_model(model, "saved_model", tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.fixture(scope="module")
def dynamic_paths(keras_file, out_dir):
    """--dynamic exports: ONNX (with NMS inside too) and SavedModel."""
    return {
        "onnx": _export(keras_file, out_dir, "dynamic.onnx", "--format", "onnx", "--dynamic", "--include-nms"),
        "saved_model": _export(keras_file, out_dir, "dynamic_saved_model", "--format", "saved_model", "--dynamic"),
    }


@pytest.mark.slow
def test_a_model_built_for_one_size_exports_at_another_and_dynamic(tmp_path):
    """train.py saves a fixed input size; export_model takes any multiple of 32, and --dynamic any."""
    from nets.yolo import YoloV4Tiny

    model = YoloV4Tiny(1, input_shape=(64, 64, 3))
    anywhere = YoloV4Tiny(1)
    anywhere.set_weights(model.get_weights())
    images = np.random.default_rng(0).uniform(0, 1, (2, 96, 128, 3)).astype(np.float32)
    want = [np.asarray(h) for h in anywhere(images, training=False)]
    for name, options in (("fixed.onnx", {"input_hw": (96, 128)}), ("dynamic.onnx", {"dynamic": True})):
        path = export_model(model, "onnx", tmp_path / name, **options)
        forward, _ = load_backend(path)
        assert _relative_error([np.asarray(h) for h in forward(images)], want) < 1e-4, name


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "saved_model"])
def test_dynamic_input_two_sizes(fmt, dynamic_paths, keras_detector, demo_images):
    """A --dynamic export runs any batch and any multiple of 32: raw heads equal the Keras
    model's at two sizes, and load_detector takes any --input-size (detections equal too)."""
    detector, inputs = keras_detector
    path = dynamic_paths[fmt]
    assert read_metadata(path)["dynamic"] is True
    forward, _ = load_backend(path)
    for hw in ((128, 128), (96, 160)):
        images = np.ascontiguousarray(inputs[:3, : hw[0], : hw[1]]) if hw[1] <= inputs.shape[2] else None
        if images is None:  # wider than the fixture's inputs: pad on the right with grey
            images = np.full((3, *hw, 3), 0.5, np.float32)
            images[:, :, : inputs.shape[2]] = inputs[:3, : hw[0]]
        want = [np.asarray(h) for h in detector.model(images, training=False)]
        got = [np.asarray(h) for h in forward(images)]
        assert [g.shape for g in got] == [w.shape for w in want]
        assert _relative_error(got, want) < 1e-4
    keras_96x160 = Detector.from_model(detector.model, input_shape=(96, 160), conf=CONF)
    exported = load_detector(path, input_shape=(96, 160), conf=CONF)
    assert exported.input_shape == (96, 160)
    _same_detections(exported.detect(demo_images[1]), keras_96x160.detect(demo_images[1]))
