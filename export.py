"""Export a trained .keras YoloV4Tiny to SavedModel, TFLite (fp32 / fp16 / int8) or ONNX.

  python export.py --weights logs/best.keras --format onnx --output model.onnx
  python export.py --weights logs/best.keras --format tflite --output model.tflite
  python export.py --weights logs/best.keras --format tflite --fp16 --output model_fp16.tflite
  python export.py --weights logs/best.keras --format tflite --int8 --calib-data VOCdevkit --output model_int8.tflite
  python export.py --weights logs/best.keras --format saved_model --include-nms --output saved_model/

The artefact computes the raw heads at a fixed input size (float32 NHWC RGB in [0, 1],
letterboxed); its class names, anchors, anchors_mask, scale_x_y and input size travel with it
(model.onnx.json / model.tflite.json next to the file, saved_model/assets/yolo_export.json).
predict.py and get_map.py take it as --weights: the detector picks ONNX Runtime, TFLite or
TensorFlow from the path and decodes it with the same code as the Keras model.

Supported: saved_model (fp32, --include-nms adds a "detect" signature with boxes/scores/classes,
--dynamic), tflite (fp32, --fp16, --int8 calibrated on ImageSets/Main/train.txt images of
--calib-data, --include-nms), onnx (fp32, --fp16, --int8 calibrated the same way, --include-nms,
--dynamic). --include-nms on onnx/tflite:
inputs images, score_threshold, iou_threshold; outputs p5, p4 (raw) and boxes (N, K, 4) xyxy in
input pixels, scores, classes, valid. Other combinations stop with an error saying what is supported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from utils.cli import add_input_size_argument, add_output_argument, run_script

FORMATS = ("saved_model", "tflite", "onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="export.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True, type=Path, help="a .keras model saved by train.py")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    add_output_argument(parser, None, "where to write (required): a directory for saved_model, a .tflite or .onnx file")
    add_input_size_argument(
        parser, help="fixed network input: SIZE or HEIGHTxWIDTH, multiples of 32 (default: the model's, else 416)"
    )
    parser.add_argument("--classes", type=Path, default=None, help="class names file (default: names in the model)")
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
    parser.add_argument("--max-detections", type=int, default=100, help="--include-nms: detections kept per image")
    args = parser.parse_args(argv)
    if args.output is None:
        parser.error("the following arguments are required: --output")
    if args.calib_images < 1:
        parser.error("--calib-images must be >= 1")
    return args


def run(argv: list[str] | None = None) -> int:
    """export.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from utils.interop.export import ExportError, check_export_options

    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    # Cheap checks first: a wrong combination fails before the model is loaded.
    check_export_options(args.format, precision, args.include_nms, args.dynamic)
    if args.int8 and args.calib_data is None:
        raise ExportError("--int8 needs --calib-data (a VOCdevkit whose train.txt images calibrate it)")
    if args.calib_data is not None and not args.calib_data.exists():
        raise ExportError(f"--calib-data {args.calib_data}: no such folder")

    from nets.model_data import load_class_names
    from utils.interop.export import export_model
    from utils.interop.loader import load_model
    from utils.interop.metadata import metadata_path

    model = load_model(args.weights)
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


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
