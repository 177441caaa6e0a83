"""Print a model's parameters and GFLOPs; `--all` compares the attention blocks (phi 0-5).

Examples:
    python summary.py --phi 4                      # one model, layer by layer
    python summary.py --all --num-classes 80       # the phi table, with each block's cost per insertion point
    python summary.py --phi 2 --attention-at stage2,head_p5,head_p4 --fusion weighted
"""

from __future__ import annotations

import argparse
import sys

from utils.cli import quiet_tensorflow

quiet_tensorflow()  # first: before anything imports TensorFlow (its start-up lines)

from nets.attention import PHI_TO_ATTENTION, resolve_attention  # noqa: E402
from nets.model_data import DEFAULT_CLASSES_PATH, DEFAULT_INPUT_SHAPE, load_class_names  # noqa: E402
from nets.stats import attention_costs, count_flops, count_params  # noqa: E402
from nets.yolo import YoloV4Tiny  # noqa: E402
from utils.cli import (  # noqa: E402
    add_input_size_argument,
    add_structure_arguments,
    add_verbosity_arguments,
    run_script,
    setup_logging,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    choice = parser.add_mutually_exclusive_group()
    phis = ", ".join(f"{i}={n}" for i, n in enumerate(PHI_TO_ATTENTION))
    choice.add_argument(
        "--phi", type=int, choices=range(len(PHI_TO_ATTENTION)), default=0, help=f"attention: {phis} (default 0)"
    )
    choice.add_argument(
        "--attention",
        help=f"attention by name, instead of --phi: {', '.join(PHI_TO_ATTENTION)}, or your own block as MODULE:CLASS "
        "(a module on the Python path or a .py file)",
    )
    choice.add_argument("--all", action="store_true", help="table for phi 0-5 instead of one model")
    add_structure_arguments(parser)
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--classes", default=str(DEFAULT_CLASSES_PATH), help="class names file (default VOC, 20)")
    classes.add_argument("--num-classes", type=int, help="number of classes, instead of --classes (80 for COCO)")
    add_input_size_argument(
        parser,
        tuple(DEFAULT_INPUT_SHAPE),
        f"input size of the FLOP count: SIZE or HxW, up to 4096 ({DEFAULT_INPUT_SHAPE[0]})",
    )
    parser.add_argument("--layers", action="store_true", help="also print Keras' layer-by-layer summary")
    add_verbosity_arguments(parser)
    return parser.parse_args(argv)


def run(argv=None) -> int:
    """summary.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    args = parse_args(argv)
    setup_logging(args)
    num_classes = args.num_classes or len(load_class_names(args.classes))
    height, width = args.input_size
    names = list(PHI_TO_ATTENTION) if args.all else [resolve_attention(
        phi=None if args.attention else args.phi, attention=args.attention)]

    print(f"YOLOv4-tiny, {num_classes} classes, GFLOPs at {height}x{width}; parameters include batch-norm statistics.")
    rows = []
    for name in names:
        model = YoloV4Tiny(
            num_classes, attention=name, input_shape=(height, width, 3), attention_at=args.attention_at,
            fusion=args.fusion,
        )
        if args.layers:
            model.summary()
        params, flops = count_params(model), count_flops(model, (height, width, 3))
        phi = PHI_TO_ATTENTION.index(name) if name in PHI_TO_ATTENTION else "-"  # a user block has none
        rows.append((phi, name, params, flops, attention_costs(model, (height, width))))

    base_params, base_flops = rows[0][2], rows[0][3]
    print(f"\n{'phi':>3}  {'attention':<9} {'params':>11} {'added':>9} {'GFLOPs':>8} {'added':>8}")
    for phi, name, params, flops, _ in rows:
        print(f"{phi:>3}  {name:<9} {params:>11,} {params - base_params:>+9,} "
              f"{flops / 1e9:>8.3f} {(flops - base_flops) / 1e9:>+8.4f}")

    if any(costs for *_, costs in rows):
        print("\nPer insertion point (params / MFLOPs):")
        for phi, name, _, _, costs in rows:
            if costs:
                print(f"{phi:>3}  {name:<5} {'  '.join(_cost_cell(c) for c in costs)}")
    return 0


def _cost_cell(cost) -> str:
    """"feat1 26x26x256: 4,368 / 0.470"; the fusion: "fusion_34 26x26x128+26x26x256: ..."."""
    shapes = cost.input_shape if isinstance(cost.input_shape, list) else [cost.input_shape]
    where = "+".join("x".join(map(str, shape)) for shape in shapes)
    return f"{cost.point.removeprefix('attention_')} {where}: {cost.params:,} / {cost.flops / 1e6:.3f}"


def main(argv=None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
