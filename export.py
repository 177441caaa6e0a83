"""Export a trained .keras YoloV4Tiny to SavedModel, TFLite (fp32 / fp16 / int8), ONNX or OpenVINO IR.

  python export.py --weights logs/best.keras --format onnx --output model.onnx
  python export.py --weights logs/best.keras --format tflite --output model.tflite
  python export.py --weights logs/best.keras --format tflite --fp16 --output model_fp16.tflite
  python export.py --weights logs/best.keras --format tflite --int8 --calib-data VOCdevkit --output model_int8.tflite
  python export.py --weights logs/best.keras --format saved_model --include-nms --output saved_model/
  python export.py --weights logs/best.keras --format onnx --include-nms --dynamic --output model_nms.onnx
  python export.py --weights logs/best.keras --format openvino --output model.xml  (+ model.bin; pip install openvino)
  python export.py --benchmark --weights logs/best.keras --data VOCdevkit/VOC2007 --output benchmark/
  python export.py --weights run/best.keras --attention-module my_blocks.py --format onnx --output model.onnx
      (a model trained with your own attention block: its module is imported first, as in predict.py)

The artefact computes the raw heads at a fixed input size (float32 NHWC RGB in [0, 1],
letterboxed); its class names, anchors, anchors_mask, scale_x_y and input size travel with it
(model.onnx.json / model.tflite.json / model.xml.json next to the file,
saved_model/assets/yolo_export.json). predict.py and get_map.py take it as --weights: the
detector picks ONNX Runtime, TFLite, OpenVINO or TensorFlow from the path and decodes it with the
same code as the Keras model.

Supported: saved_model (fp32, --include-nms adds a "detect" signature with boxes/scores/classes,
--dynamic), tflite (fp32, --fp16, --int8 calibrated on ImageSets/Main/train.txt images of
--calib-data, --include-nms), onnx (fp32, --fp16, --int8 calibrated the same way, --include-nms,
--dynamic), openvino (fp32 only: an IR model.xml + model.bin, run by OpenVINO on the CPU;
OpenVINO is optional, pip install openvino). --include-nms on onnx/tflite:
inputs images, score_threshold, iou_threshold; outputs p5, p4 (raw) and boxes (N, K, 4) xyxy in
input pixels, scores, classes, valid. Other combinations stop with an error saying what is supported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from utils.cli import (
    add_attention_module_argument,
    add_input_size_argument,
    add_output_argument,
    add_verbosity_arguments,
    quiet_tensorflow,
    run_script,
    setup_logging,
)
from utils.defaults import CONF_THRESHOLD, EVAL_CONF_THRESHOLD, EVAL_NMS_IOU, MAX_DETECTIONS, PR_SCORE_THRESHOLD

quiet_tensorflow()  # before anything imports TensorFlow (its start-up lines)

# utils.interop.export.FORMATS, written out so that --help needs no TensorFlow.
FORMATS = ("saved_model", "tflite", "onnx", "openvino")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="export.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True, type=Path, help="a .keras model saved by train.py")
    parser.add_argument("--format", choices=FORMATS, help="what to write (required unless --benchmark)")
    add_output_argument(
        parser,
        None,
        "where to write (required): a directory for saved_model, a .tflite or .onnx file, an .xml file for "
        "openvino (its weights go to the .bin of the same name); "
        "--benchmark: the folder for benchmark.csv and benchmark.md",
    )
    add_input_size_argument(
        parser,
        help="fixed network input: SIZE or HEIGHTxWIDTH, multiples of 32 up to 4096 (default: the model's, else 416)",
    )
    parser.add_argument("--classes", type=Path, default=None, help="class names file (default: names in the model)")
    add_attention_module_argument(parser)
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--fp16", action="store_true", help="tflite: float16 weights (half the size); onnx: float16 weights and compute"
    )
    precision.add_argument(
        "--int8",
        action="store_true",
        help="tflite: full-integer int8; onnx: ONNX Runtime static QDQ int8; calibrated on --calib-data (float I/O)",
    )
    parser.add_argument(
        "--calib-data",
        type=Path,
        default=None,
        help="--int8: a VOCdevkit (or VOC2007 folder); JPEGImages listed in ImageSets/Main/<--calib-split>.txt",
    )
    parser.add_argument("--calib-split", default="train", help="--int8: image set to calibrate on (default: train)")
    parser.add_argument(
        "--calib-images", type=int, default=100, help="--int8: most calibration images, spread over the split (100)"
    )
    parser.add_argument(
        "--include-nms",
        action="store_true",
        help="decoding and per-class NMS inside the model: saved_model adds a 'detect' signature; onnx and "
        "tflite add inputs score_threshold, iou_threshold and outputs boxes, scores, classes, valid",
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="onnx, saved_model: any batch and any height/width multiples of 32 (--input-size: the default size)",
    )
    parser.add_argument(
        "--max-detections",
        type=int,
        default=MAX_DETECTIONS,
        help=f"--include-nms: detections kept per image (default {MAX_DETECTIONS})",
    )
    bench = parser.add_argument_group("--benchmark: every format and precision side by side")
    bench.add_argument(
        "--benchmark",
        action="store_true",
        help="export to every format and precision in a temporary folder, then print and write one table: "
        "file size, mAP@0.5 on --data's --split (get_map.py's evaluator), ms/img at batch 1 (interleaved), "
        "ratio to the Keras model",
    )
    bench.add_argument(
        "--data", type=Path, default=None, help="--benchmark: a VOC folder (int8 calibrates on its train split)"
    )
    bench.add_argument("--split", default="test", help="--benchmark: the image set to evaluate (default: test)")
    bench.add_argument("--runs", type=int, default=20, help="--benchmark: timed runs per format (default 20)")
    bench.add_argument(
        "--only",
        default=None,
        help="--benchmark: a comma-separated subset of FORMAT:PRECISION[:nms] rows, e.g. onnx:fp32,tflite:int8",
    )
    add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    if args.output is None:
        parser.error("the following arguments are required: --output")
    if args.benchmark and args.data is None:
        parser.error("--benchmark needs --data (a VOC folder with a test split)")
    if not args.benchmark and args.format is None:
        parser.error("the following arguments are required: --format (or --benchmark)")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if args.calib_images < 1:
        parser.error("--calib-images must be >= 1")
    return args


def run(argv: list[str] | None = None) -> int:
    """export.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    args = parse_args(argv)
    setup_logging(args)
    if args.benchmark:
        return run_benchmark(args)
    from utils.interop.export import ExportError, check_export_options

    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    # Cheap checks first: a wrong combination fails before the model is loaded.
    check_export_options(args.format, precision, args.include_nms, args.dynamic)
    if args.format == "openvino":
        from utils.interop.backends import import_openvino

        import_openvino()  # not installed: said before the model is loaded
    if args.int8 and args.calib_data is None:
        raise ExportError("--int8 needs --calib-data (a VOCdevkit whose train.txt images calibrate it)")
    if args.calib_data is not None and not args.calib_data.exists():
        raise ExportError(f"--calib-data {args.calib_data}: no such folder")

    from nets.model_data import load_class_names
    from utils.inference.engine.loader import load_model
    from utils.interop.export import export_model
    from utils.interop.metadata import metadata_path

    model = load_model(args.weights, attention_module=args.attention_module)
    class_names = load_class_names(args.classes) if args.classes is not None else None
    start = time.perf_counter()
    out = export_model(
        model,
        args.format,
        args.output,
        input_hw=args.input_size,
        precision=precision,
        calib_data=args.calib_data,
        calib_split=args.calib_split,
        num_calibration=args.calib_images,
        include_nms=args.include_nms,
        max_detections=args.max_detections,
        class_names=class_names,
        dynamic=args.dynamic,
    )
    seconds = time.perf_counter() - start
    print(f"wrote {out} ({args.format}, {precision}) in {seconds:.1f} s; metadata: {metadata_path(out)}")
    return 0


# The --benchmark rows: (format, precision, include_nms); "keras" is the reference.
BENCHMARK_ROWS = [
    ("keras", "fp32", False),
    *[(fmt, precision, False) for fmt in FORMATS for precision in ("fp32", "fp16", "int8")],
    *[(fmt, precision, True) for fmt in ("tflite", "onnx") for precision in ("fp32", "fp16", "int8")],
]
# What --benchmark names each export (saved_model: a directory).
BENCHMARK_SUFFIXES = {"saved_model": "", "tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}
BENCHMARK_COLUMNS = ("format", "precision", "nms_inside", "size_mb", "map50", "ms_per_img", "ratio_to_keras", "note")


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        files.append(path.with_suffix(".bin"))  # an OpenVINO IR's weights
    return sum(p.stat().st_size for p in files) / 1e6


def _benchmark_rows(only: str | None) -> list[tuple[str, str, bool]]:
    if only is None:
        return list(BENCHMARK_ROWS)
    wanted = []
    for item in only.split(","):
        parts = item.strip().split(":")
        wanted.append((parts[0], parts[1] if len(parts) > 1 else "fp32", len(parts) > 2 and parts[2] == "nms"))
    from utils.interop.export import ExportError

    unknown = [w for w in wanted if w not in BENCHMARK_ROWS]
    if unknown:
        raise ExportError(f"--only: unknown rows {unknown}; rows are FORMAT:PRECISION[:nms] of {BENCHMARK_ROWS}")
    return [("keras", "fp32", False), *[w for w in wanted if w[0] != "keras"]]


def run_benchmark(args: argparse.Namespace) -> int:
    """export.py --benchmark: every format and precision exported to a temporary folder, each
    loaded by load_detector, evaluated on --data's --split with get_map.py's evaluator (conf
    0.001, NMS IoU 0.5, mAP@0.5), and timed end to end (letterbox, model, decode, NMS; conf 0.5)
    on one image at batch 1, all detectors interleaved run after run (medians)."""
    import csv
    import tempfile

    import numpy as np

    from utils.data.images import load_image
    from utils.data.voc import find_image
    from utils.evaluation.voc_eval import EvaluationLog, detect_split, evaluate_split, load_voc_split
    from utils.inference.engine.loader import load_detector, load_model
    from utils.interop.export import ExportError, check_export_options, export_model

    rows = _benchmark_rows(args.only)
    model = load_model(args.weights, attention_module=args.attention_module)
    names = model.class_names
    detector_options = {
        "conf": EVAL_CONF_THRESHOLD,
        "nms_iou": EVAL_NMS_IOU,
        "batch_size": 1,
        "input_shape": args.input_size,
    }
    split = load_voc_split(args.data, args.split, names, EvaluationLog(), progress=False)
    image_ids = list(split.ground_truths)
    if not image_ids:
        raise ExportError(f"--data {args.data}: split {args.split!r} has no usable annotations")
    timing_image = load_image(find_image(split.root, image_ids[0]))
    results = []
    detectors = {}
    with tempfile.TemporaryDirectory(prefix="yolo_benchmark_") as tmp:
        for fmt, precision, nms in rows:
            row = {"format": fmt, "precision": precision, "nms_inside": "yes" if nms else "no", "note": ""}
            results.append(row)
            try:
                if fmt == "keras":
                    path = Path(args.weights)
                else:
                    check_export_options(fmt, precision, nms)
                    suffix = BENCHMARK_SUFFIXES[fmt]
                    path = Path(tmp) / f"{fmt}_{precision}{'_nms' if nms else ''}{suffix}"
                    print(f"exporting {fmt} {precision}{' with NMS' if nms else ''} ...", flush=True)
                    export_model(
                        model, fmt, path, input_hw=args.input_size, precision=precision, include_nms=nms,
                        calib_data=args.data if precision == "int8" else None, num_calibration=args.calib_images,
                    )
                row["size_mb"] = f"{_size_mb(path):.1f}"
                # The keras row is the TensorFlow graph (the reference), not the default ONNX Runtime copy.
                backend = "keras" if fmt == "keras" else None
                detector = load_detector(path, backend=backend, **detector_options)
                log = EvaluationLog()
                detections = detect_split(detector, split, log, batch_size=1, progress=False)
                evaluation = evaluate_split(
                    split, detections, names, log, {"weights": str(path)}, score_threshold=PR_SCORE_THRESHOLD
                )
                row["map50"] = f"{evaluation.result.map:.4f}"
                detector.detect([timing_image])  # warm up
                detectors[(fmt, precision, nms)] = detector
            except ExportError as err:
                row["note"] = f"refused: {err}".split("; ")[0]
            except Exception as err:  # noqa: BLE001 - a failing format is a row saying why, not the end
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                # TensorFlow's "in user code:" errors end with the actual message.
                row["note"] = f"failed: {type(err).__name__}: {lines[-1] if lines else ''}"[:300]
        for detector in detectors.values():
            detector.conf = CONF_THRESHOLD  # timed at predict.py's default score threshold, not mAP's
        times = {key: [] for key in detectors}
        for _ in range(args.runs):  # interleaved: every detector once per run
            for key, detector in detectors.items():
                start = time.perf_counter()
                detector.detect([timing_image])
                times[key].append(1000.0 * (time.perf_counter() - start))
    medians = {key: float(np.median(v)) for key, v in times.items()}
    reference = medians.get(("keras", "fp32", False))
    for row, key in zip(results, rows, strict=True):
        if key in medians:
            row["ms_per_img"] = f"{medians[key]:.1f}"
            row["ratio_to_keras"] = f"{medians[key] / reference:.2f}" if reference else ""
    args.output.mkdir(parents=True, exist_ok=True)
    with open(args.output / "benchmark.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=BENCHMARK_COLUMNS)
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in BENCHMARK_COLUMNS} for row in results)
    table = ["| " + " | ".join(BENCHMARK_COLUMNS) + " |", "|" + "---|" * len(BENCHMARK_COLUMNS)]
    table += ["| " + " | ".join(str(row.get(c, "")) for c in BENCHMARK_COLUMNS) + " |" for row in results]
    header = (
        f"{args.weights}, {len(image_ids)} images of {args.data} {args.split}, mAP@0.5 at conf 0.001, "
        f"ms/img: batch 1 end to end at conf 0.5, median of {args.runs} interleaved runs"
    )
    (args.output / "benchmark.md").write_text(header + "\n\n" + "\n".join(table) + "\n")
    print(header)
    print("\n".join(table))
    print(f"wrote {args.output / 'benchmark.csv'} and {args.output / 'benchmark.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
