"""Ablation study of the attention blocks: train each block (phi) with several seeds on the same data,
schedule and budget, score every run on the test split, and tell which differences are real.

    python ablation.py --demo --seeds 2 --epochs 14 --output ablation_demo
    python ablation.py --demo --epochs 14 --output ablation_demo --variant weighted="--phi 0 --fusion weighted" \\
        --variant mine="--attention my_blocks.py:MyBlock"
    python ablation.py --data VOCdevkit --classes model_data/voc_classes.txt --weights yolov4-tiny.weights \\
        --epochs 100 --batch-size 32 --seeds 3 --jobs 4 --output ablation_voc

Every option of train.py (python train.py --help) passes through to every run, except those the
study sets per run (--phi, --attention, --seed, --output, --resume, --exist-ok); --eval-period is 1 unless
given, so the learning curves have a val mAP per epoch. Each run is `train.py ... --phi P --seed S
--output OUTPUT/runs/phiP_seedS`, then `get_map.py --coco` on the data's test split (--split)
with its best.keras: mAP@0.5 (VOC all-point) and mAP@.5:.95 (COCO). --variant NAME=FLAGS adds a row
trained with FLAGS instead of --phi P (a user block, a placement, the weighted fusion), in runs/NAME_seedS.

Written to --output: table.md / table.csv / table.json (params, GFLOPs, CPU and GPU latency,
mAP@0.5 and mAP@.5:.95 as mean ± 95% CI over seeds, and the difference to phi 0 (row phi0) paired by seed
with its CI and verdict: better, worse, or no detectable difference), map_vs_latency.png,
learning_curves.png, and runs/ with every run's folder. Run the same command again to continue
an interrupted study: finished runs are skipped, a stopped training resumes from its checkpoint.
The same command with --report trains nothing: the table of the runs finished so far.

--jobs N trains N runs side by side, one per GPU (CUDA_VISIBLE_DEVICES); without a GPU the runs go
one at a time. Exit codes: 0 every run finished, 1 some did not (named; the table has the rest),
2 bad options or no run finished.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from utils.cli import quiet_tensorflow

quiet_tensorflow()  # first: before anything imports TensorFlow (its start-up lines)

from nets.attention import PHI_TO_ATTENTION  # noqa: E402
from utils.cli import (  # noqa: E402
    add_output_argument,
    add_verbosity_arguments,
    parse_variant,
    run_script,
    setup_logging,
)
from utils.errors import YoloError  # noqa: E402
from utils.evaluation.study import StudyError  # noqa: E402
from utils.training.ablation import (  # noqa: E402
    PHI_ROW,
    StudyPlan,
    report_outcomes,
    run_study,
    summarize_study,
    time_budget_field,
    train_supports_time,
)
from utils.training.config import add_arguments, config_from_args, resolve_config  # noqa: E402

# train.py options the study sets itself, and what to use instead.
SET_PER_RUN = {
    "phi": "--phis",
    "attention": "--phis",
    "seed": "--seeds N (seeds 0 to N-1)",
    "resume": "nothing: run the same command again, it resumes",
    "exist_ok": "nothing: a run that starts again replaces what its earlier start left",
    "train_annotations": "--data (the runs are evaluated on its test split)",
    "val_annotations": "--data (the runs are evaluated on its test split)",
}
# What a --variant may not set: what the study sets per run, the data it is scored on, and the
# schedule and input every row shares (the table compares rows at the same budget and size).
NOT_IN_VARIANT = {
    **{k: v for k, v in SET_PER_RUN.items() if k not in ("phi", "attention")},
    "save_dir": "nothing: a variant's runs are in --output/runs/NAME_seedS",
    **{
        key: f"{flag} for the whole study"
        for key, flag in [
            ("data", "--data"), ("train_sets", "--train-sets"), ("val_sets", "--val-sets"), ("classes", "--classes"),
            ("demo", "--demo"), ("input_size", "--input-size"), ("epochs", "--epochs"), ("time", "--time"),
            ("batch_size", "--batch-size"), ("freeze_epochs", "--freeze-epochs"),
            ("freeze_batch_size", "--freeze-batch-size"), ("steps_per_epoch", "--steps-per-epoch"),
            ("eval_period", "--eval-period"),
        ]
    },
}  # fmt: skip


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablation.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # an abbreviated train.py option must not be taken for one of ours
    )
    blocks = ", ".join(f"{i} {name}" for i, name in enumerate(PHI_TO_ATTENTION))
    parser.add_argument(
        "--phis",
        type=int,
        nargs="+",
        default=list(range(len(PHI_TO_ATTENTION))),
        choices=range(len(PHI_TO_ATTENTION)),
        metavar="PHI",
        help=f"the blocks to compare ({blocks}); phi 0 is the baseline of the differences (default: all)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="NAME=FLAGS",
        help='one more row, trained with train.py FLAGS instead of --phi P (repeatable), e.g. '
        'weighted="--phi 0 --fusion weighted" or mine="--attention my_blocks.py:MyBlock"',
    )
    parser.add_argument("--seeds", type=_count, default=3, help="seeds per block, 0 to N-1 (default 3)")
    parser.add_argument(
        "--jobs", type=_count, default=1, help="runs side by side, one per visible GPU (default 1; CPU: always 1)"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="train and evaluate nothing: the table and plots of the runs finished so far (a study still "
        "running, from another terminal, or a stopped one), the others named under the table",
    )
    parser.add_argument(
        "--split", default=None, metavar="SET", help="the set every run is scored on (default: the data's test set)"
    )
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=None,
        help="rounds of the latency measurement (default 30; with --report 0, as the runs may still be training; "
        "0: none)",
    )
    add_output_argument(parser, "ablation_out", "the study's folder (default: ablation_out)")
    if not train_supports_time():
        parser.add_argument("--time", default=None, help=argparse.SUPPRESS)
    add_verbosity_arguments(parser)
    return parser


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], dict, object]:
    """(our options, the train.py arguments, those parsed as flag -> value, their TrainConfig)."""
    args, train_args = build_parser().parse_known_args(argv)
    if getattr(args, "time", None) is not None:  # only defined when train.py has no --time
        raise StudyError("this train.py has no --time budget; give the study a number of epochs (--epochs N)")
    train_parser = argparse.ArgumentParser(prog="ablation.py (train.py options)", allow_abbrev=False)
    add_arguments(train_parser)
    given = {k: v for k, v in vars(train_parser.parse_args(train_args)).items() if v is not None}
    for name, instead in SET_PER_RUN.items():
        if name in given:
            raise StudyError(f"--{name.replace('_', '-')} is set by the study for each run; use {instead}")
    if "save_dir" in given:
        raise StudyError("the runs' folders are --output/runs/phiP_seedS; --output names the study's folder")
    if "eval_period" not in given:
        train_args = [*train_args, "--eval-period", "1"]
        given["eval_period"] = 1
    config = config_from_args(argparse.Namespace(**given))
    variant_parser = argparse.ArgumentParser(prog="--variant", allow_abbrev=False, exit_on_error=False, add_help=False)
    add_arguments(variant_parser)
    for name, flags in args.variant:
        check_variant(variant_parser, given, name, flags)
    return args, train_args, given, config


def check_variant(train_parser: argparse.ArgumentParser, shared: dict, name: str, flags: str) -> None:
    """StudyError when --variant NAME=FLAGS cannot be a row: a name of the blocks' rows (phiN, in
    any letter case), a flag the study sets or shares, or FLAGS that train.py refuses (an unknown
    block, a user block that breaks the contract)."""
    if PHI_ROW.fullmatch(name):
        raise StudyError(f"--variant {name}: names phiN are the blocks' rows; choose another name")
    try:
        parsed, unknown = train_parser.parse_known_args(shlex.split(flags))
    except argparse.ArgumentError as err:
        raise StudyError(f"--variant {name}: {err}") from None
    if unknown:
        raise StudyError(f"--variant {name}: {' '.join(unknown)} not train.py options (python train.py --help)")
    own = {k: v for k, v in vars(parsed).items() if v is not None}
    for key, instead in NOT_IN_VARIANT.items():
        if key in own:
            raise StudyError(f"--variant {name}: --{key.replace('_', '-')} is not a variant's; use {instead}")
    try:  # an unknown block or a user block that breaks the contract, before any run starts
        resolve_config(config_from_args(argparse.Namespace(**{**shared, **own})))
    except YoloError as err:
        raise StudyError(f"--variant {name}: {err}") from None


def budget(config) -> str:
    """Each run's training budget in words: minutes with --time (when train.py has it), else epochs."""
    field = time_budget_field()
    minutes = getattr(config, field) if field else None
    return f"--time {minutes:g} min" if minutes else f"{config.epochs} epochs"


def run(argv: list[str] | None = None) -> int:
    """ablation.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    args, train_args, given, config = parse(argv)
    setup_logging(args)
    if args.output is None:
        raise StudyError("give the study's folder with --output")
    if config.demo:
        import train

        train.ensure_demo_data()  # once, before runs that could write it side by side
    if isinstance(config.data, list):
        raise StudyError("the study scores one data set's test split: give one --data")
    names = [name.casefold() for name, _ in args.variant]
    if len(set(names)) < len(names):  # (their folders would be one on a case-insensitive file system)
        raise StudyError(f"--variant names must differ, letter case aside: {', '.join(n for n, _ in args.variant)}")
    plan = StudyPlan(
        output=Path(args.output),
        phis=sorted(set(args.phis)),
        seeds=list(range(args.seeds)),
        train_args=train_args,
        train_options={k: v if isinstance(v, (bool, int, float, list)) else str(v) for k, v in given.items()},
        data=str(config.data),
        split=args.split,
        input_hw=config.input_hw,
        latency_rounds=(0 if args.report else 30) if args.latency_runs is None else args.latency_runs,
        budget=budget(config),
        variants=list(args.variant),
    )
    outcomes = report_outcomes(plan) if args.report else run_study(plan, jobs=args.jobs)
    summary = summarize_study(plan, outcomes)
    print()
    print((plan.output / "table.md").read_text(encoding="utf-8"), end="")
    print("\nwritten: " + ", ".join(str(path) for path in summary.files))
    failed = [o for o in outcomes if o.error]
    if failed and args.report:
        print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished; the study's command continues it")
    elif failed:
        message = f"{len(failed)} of {len(outcomes)} runs did not finish (named above); the same command retries them"
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
