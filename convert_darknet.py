"""Convert between darknet (.cfg + .weights) and our Keras YOLOv4-tiny (.keras).

Darknet -> Keras (the default):

    python convert_darknet.py --cfg yolov4-tiny.cfg --weights yolov4-tiny.weights \\
        --classes model_data/coco_classes.txt --output model_data/yolov4_tiny.keras

Another class count than the cfg's (COCO's 80 to your 20 with --classes): the backbone and neck load,
the two head convolutions start fresh.

Darknet weights into an attention model (phi 1-5; the blocks start as the identity, so the model
computes what darknet's does until it trains), at the default points or those --attention-at names,
with --fusion weighted if wanted:

    python convert_darknet.py --cfg yolov4-tiny.cfg --weights yolov4-tiny.weights \\
        --classes model_data/coco_classes.txt --phi 2 --out model_data/yolov4_tiny_cbam.keras
    python convert_darknet.py --cfg yolov4-tiny.cfg --weights yolov4-tiny.weights \\
        --phi 4 --attention-at stage2,head_p5,head_p4 --out model_data/yolov4_tiny_ca_heads.keras

Keras -> darknet (phi 0, --fusion concat models only):

    python convert_darknet.py --to-darknet --weights model_data/yolov4_tiny.keras \\
        --out-cfg yolov4-tiny-ours.cfg --out-weights yolov4-tiny-ours.weights
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.cli import (
    add_output_argument,
    add_structure_arguments,
    add_verbosity_arguments,
    quiet_tensorflow,
    run_script,
    setup_logging,
)
from utils.errors import YoloError

quiet_tensorflow()  # before anything imports TensorFlow (its start-up lines)


class ConversionError(YoloError):
    """Arguments that cannot make a conversion."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Convert darknet YOLOv4-tiny .cfg/.weights to a Keras .keras model (default), "
            "or a phi-0 .keras model back to darknet (--to-darknet). The cfg's classes, anchors, masks, "
            "scale_x_y and input size travel into the Keras model's config, so it decodes as darknet does."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--to-darknet",
        action="store_true",
        help="reverse direction: read the .keras model given by --weights, write --out-cfg and --out-weights",
    )
    parser.add_argument(
        "--weights",
        required=True,
        type=Path,
        help="input: the darknet .weights file, or with --to-darknet the .keras model",
    )
    parser.add_argument("--cfg", type=Path, help="darknet -> Keras: the darknet .cfg (required in that direction)")
    parser.add_argument(
        "--classes",
        type=Path,
        help="darknet -> Keras: class names, one per line; with another count than the cfg's classes the "
        "backbone and neck load and the two heads start fresh",
    )
    add_output_argument(parser, "model_data/yolov4_tiny.keras", "darknet -> Keras: output .keras")
    attention = parser.add_mutually_exclusive_group()
    attention.add_argument(
        "--phi", type=int, choices=range(6),
        help="attention by number: 0 none, 1 SE, 2 CBAM, 3 ECA, 4 CA, 5 self-attention (default 0)",
    )
    attention.add_argument("--attention", help="attention by name: none, se, cbam, eca, ca, sa")
    add_structure_arguments(parser)
    parser.add_argument(
        "--any-size",
        action="store_true",
        help="darknet -> Keras: give the model a (None, None, 3) input (any multiple of 32) instead of the cfg's size",
    )
    parser.add_argument("--out-cfg", type=Path, help="Keras -> darknet: output .cfg (default: next to --weights)")
    parser.add_argument(
        "--out-weights", type=Path, help="Keras -> darknet: output .weights (default: next to --weights)"
    )
    add_verbosity_arguments(parser)
    return parser


def darknet_to_keras(args: argparse.Namespace) -> int:
    from nets.attention import resolve_attention
    from nets.model_data import load_class_names
    from utils.interop.darknet import model_from_darknet

    if args.cfg is None:
        raise ConversionError("--cfg is required to convert darknet weights to Keras")
    try:
        attention = resolve_attention(phi=args.phi, attention=args.attention)
    except ValueError as err:  # nets raises plain ValueErrors for its arguments
        raise ConversionError(str(err)) from None
    class_names = load_class_names(args.classes) if args.classes else None
    input_shape = (None, None, 3) if args.any_size else None
    model, report = model_from_darknet(
        args.cfg, args.weights, class_names, attention=attention, input_shape=input_shape, fresh_heads=True,
        attention_at=args.attention_at, fusion=args.fusion,
    )
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    print(
        f"Saved {args.output}: {model.num_classes} classes, attention '{model.attention}', input {model.image_shape}, "
        f"anchors {model.anchors}, masks {model.anchors_mask}, scale_x_y {model.scale_x_y}"
    )
    return 0


def keras_to_darknet(args: argparse.Namespace) -> int:
    from utils.inference.engine.loader import load_model
    from utils.interop.darknet import save_darknet

    if args.weights.suffix != ".keras":
        raise ConversionError(f"--to-darknet reads a .keras model; got {args.weights}")
    model = load_model(args.weights)
    out_cfg = args.out_cfg or args.weights.with_suffix(".cfg")
    out_weights = args.out_weights or args.weights.with_suffix(".weights")
    for path in (out_cfg, out_weights):
        path.parent.mkdir(parents=True, exist_ok=True)
    save_darknet(model, out_cfg, out_weights)
    print(f"Wrote {out_cfg} and {out_weights} ({model.num_classes} classes, {model.count_params():,} floats)")
    return 0


def run(argv: list[str] | None = None) -> int:
    """convert_darknet.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return keras_to_darknet(args) if args.to_darknet else darknet_to_keras(args)


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
