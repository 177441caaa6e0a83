"""Every training setting in one flat table: name, default, one-line help.

train.py builds its command line from `TrainConfig`; the trainer writes the resolved settings
(`resolve_config`) as settings.json next to the weights, so a run can be reproduced.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from nets.fusion import FUSIONS
from nets.model_data import (
    DEFAULT_ANCHORS_PATH,
    DEFAULT_CLASSES_PATH,
    DEFAULT_INPUT_SHAPE,
    MAX_INPUT_SIDE,
    parse_input_size,
)
from utils.cli import ATTENTION_AT_HELP, DATA_HELP, FUSION_HELP, OUTPUT_ALIASES
from utils.defaults import (
    EVAL_CONF_THRESHOLD,
    EVAL_NMS_IOU,
    JITTER,
    MIXUP_PROB,
    MOSAIC_PROB,
    OBJ_BALANCE,
    PRECISIONS,
    SCALE_RANGE,
)
from utils.errors import YoloError
from utils.training.lr_schedule import DEFAULT_LR

logger = logging.getLogger("yolov4_tiny.training")

STRATEGIES = ("none", "mirrored", "multi-worker")
DEMO_DATA_DIR = Path("demo_data")


class ConfigError(YoloError, ValueError):
    """A training setting that cannot work; the message names the flag."""


def _opt(default, help_text: str, **extra):
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class TrainConfig:
    phi: int | None = _opt(
        None, "attention: 0 none, 1 SE, 2 CBAM, 3 ECA, 4 Coordinate Attention, 5 self-attention (default: 0)"
    )
    attention: str | None = _opt(
        None, "attention by name instead of --phi: none, se, cbam, eca, ca, sa, or your own block as MODULE:CLASS "
        "(a module on the Python path or a .py file; docs/attention.md, 'Your own block')"
    )
    attention_at: str | None = _opt(None, ATTENTION_AT_HELP)
    fusion: str = _opt("concat", FUSION_HELP, choices=FUSIONS)
    data: str | list[str] = _opt("VOCdevkit", DATA_HELP + "; repeat it to train on several (their sets concatenated)",
                                 action="append")
    train_sets: list[str] | None = _opt(
        None, "training sets of --data, each SPLIT or WHERE:SPLIT (2007:trainval 2012:trainval) (default: train)",
        nargs="+",
    )
    val_sets: list[str] | None = _opt(
        None, "validation sets of --data, as --train-sets (default: val, when the data has it)", nargs="+",
        aliases=("--test-set",),
    )
    train_annotations: str | None = _opt(None, "annotation-line file (voc_annotation.py output) instead of --data")
    val_annotations: str | None = _opt(None, "annotation-line file for validation (with --train-annotations)")
    classes: str | None = _opt(
        None, f"class names, one a line (default: the data's own names, data.yaml or COCO, else {DEFAULT_CLASSES_PATH})"
    )
    anchors: str = _opt(str(DEFAULT_ANCHORS_PATH), "anchors file: w,h, w,h, ... in input pixels")
    input_size: str = _opt(
        str(DEFAULT_INPUT_SHAPE[0]),
        f"network input: {DEFAULT_INPUT_SHAPE[0]} or HxW, multiples of 32 up to {MAX_INPUT_SIDE}",
    )
    weights: str | None = _opt(None, "initial weights: a .keras model (matching layers by name) or darknet .weights")
    epochs: int = _opt(300, "total epochs, frozen ones included")
    freeze_epochs: int | None = _opt(None, "epochs with the backbone frozen first (default: 50 with --weights, else 0)")
    batch_size: int = _opt(16, "global batch size once unfrozen")
    freeze_batch_size: int = _opt(32, "global batch size while frozen")
    freeze_bn: bool = _opt(False, "keep every batch-norm in inference mode, statistics and scale fixed (tiny batches)")
    optimizer: str = _opt("sgd", "sgd (Nesterov, momentum --momentum) or adam", choices=("sgd", "adam"))
    lr: float | None = _opt(None, f"initial learning rate at batch 64 (default {DEFAULT_LR}); scaled by batch size")
    min_lr_ratio: float = _opt(0.01, "final learning rate as a fraction of the initial one")
    lr_decay: str = _opt("cos", "learning-rate decay after warm-up", choices=("cos", "step"))
    warmup_epochs: float | None = _opt(None, "warm-up epochs (default: 5%% of --epochs, between 1 and 3)")
    min_lr_epochs: float | None = _opt(
        None, "last epochs held at the final rate, cos decay (default: 5%% of --epochs, between 1 and 15)"
    )
    momentum: float = _opt(0.937, "SGD momentum / Adam beta_1")
    weight_decay: float | None = _opt(None, "weight decay of kernels, not of BN or biases (default: sgd 5e-4, adam 0)")
    weight_decay_mode: str | None = _opt(
        None, "coupled: L2 added to the gradient before the momentum; decoupled: AdamW-style "
        "(default: sgd coupled, adam decoupled)", choices=("coupled", "decoupled"),
    )
    mosaic: float = _opt(MOSAIC_PROB, "probability of a mosaic sample")
    mixup: float = _opt(MIXUP_PROB, "probability of mixup on a mosaic sample (0.5 in bubbliiiing's recipe)")
    mosaic_ratio: float = _opt(0.7, "mosaic and mixup only in this first fraction of the epochs")
    jitter: float = _opt(
        JITTER, "aspect-ratio jitter of every placed image, mosaic tiles too: its aspect is multiplied by "
        "U(1-j, 1+j) / U(1-j, 1+j) (0: shapes kept; bubbliiiing's recipe: 0.3)"
    )
    scale_min: float = _opt(
        SCALE_RANGE[0], "a non-mosaic sample's (and a mixup partner's) longer side becomes U(--scale-min, --scale-max) "
        "times the input's (bubbliiiing's recipe: 0.25-2)"
    )
    scale_max: float = _opt(SCALE_RANGE[1], "see --scale-min (above 1: the image is cropped)")
    label_smoothing: float = _opt(0.0, "class label smoothing")
    ignore_thresh: float = _opt(0.5, "objectness of cells overlapping a ground truth above this IoU is ignored")
    anchor_iou_thresh: float = _opt(
        0.213, "also assign a box to every anchor whose shape IoU with it exceeds this (yolov4.cfg's "
        "iou_thresh; 1: the best anchor only, as yolov4-tiny.cfg and bubbliiiing)"
    )
    box_weight: float = _opt(
        0.33, "weight of the box (CIoU) term of the loss (0.33: a third, for the three cells of --neighbor-cells; "
        "darknet's sums with one cell a box: 1)"
    )
    obj_weight: float = _opt(1.0, "weight of the objectness term of the loss")
    p5_obj_balance: float = _opt(
        OBJ_BALANCE[0], "weight of the coarse head's (P5, large objects) objectness term, P4's being 1 "
        f"(YOLOv5's and bubbliiiing's {OBJ_BALANCE[0]}; darknet's 1)"
    )
    cls_weight: float = _opt(0.33, "weight of the class term of the loss (as --box-weight)")
    neighbor_cells: bool = _opt(
        True, "also train the two cells next to each box's centre cell nearest the centre (YOLOv5; the model "
        "then decodes centres with scale_x_y 2): three positives a box, which the box and class weights' "
        "defaults of 0.33 compensate; --no-neighbor-cells --box-weight 1 --cls-weight 1 is darknet's assignment"
    )
    obj_iou_target: bool = _opt(
        False, "objectness target of a positive = its predicted box's CIoU with the ground truth, not 1 (YOLOv5)"
    )
    loss_normalization: str = _opt(
        "sum", "sum: darknet's per-image sums; mean: per-term means with bubbliiiing's ratios (its lr needs "
        "hundreds of epochs)", choices=("sum", "mean"),
    )
    save_dir: str = _opt("logs", "output folder: weights, checkpoints, logs and plots", flag="--output")
    save_period: int = _opt(10, "write a numbered .keras every this many epochs (0: never)")
    eval_period: int = _opt(10, "val mAP@0.5 every this many epochs and at the end (0: never)")
    ema: bool = _opt(True, "keep a moving average of the weights (ultralytics' EMA); it is what is evaluated and saved")
    patience: int | None = _opt(
        None, "stop when the val mAP (or what picks best.keras) has not improved for this many evaluations (0: never)"
    )
    time: float | None = _opt(
        None, "wall-clock budget of the whole run in minutes: fits the number of epochs (instead of --epochs)"
    )
    seed: int = _opt(0, "seed of the weights' initialisation and of every augmentation draw")
    precision: str = _opt(
        "auto", "compute precision; float16 and bfloat16 are mixed (float32 weights; float16 with loss scaling). "
        "auto: float16 on a GPU, bfloat16 on a CPU with AMX or AVX512-BF16, else float32. The .keras files "
        "written are float32 whatever it is", choices=PRECISIONS,
    )
    mixed_precision: bool = _opt(False, "the same as --precision float16 (the older flag)")
    xla: bool = _opt(False, "XLA-compile the forward and backward pass")
    demo: bool = _opt(False, "train on the built-in shapes demo (generated under demo_data/ if absent)")
    strategy: str = _opt(
        "none", "mirrored: all local GPUs (on JAX: every local device); multi-worker: several hosts, from TF_CONFIG on "
        "TensorFlow, from KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID on JAX (docs/training.md)",
        choices=STRATEGIES,
    )
    resume: bool = _opt(False, "continue the run in --save-dir from its checkpoint")
    exist_ok: bool = _opt(
        False, "start a new run in an --output that holds one: that run's files are removed first (other files "
        "stay); without it (or --resume) such a folder is refused. --demo sets it for its own logs/demo"
    )
    max_boxes: int = _opt(100, "most boxes per training image")
    eval_conf: float = _opt(EVAL_CONF_THRESHOLD, "score threshold of the detections scored for mAP")
    eval_nms_iou: float = _opt(EVAL_NMS_IOU, "NMS IoU threshold of the detections scored for mAP")
    steps_per_epoch: int | None = _opt(None, "cap on steps per epoch (quick trials)")
    workers: int | None = _opt(None, "parallel image loaders (default: two per CPU core the process may use)")

    @property
    def input_hw(self) -> tuple[int, int]:
        return parse_input_size(self.input_size)

    def to_dict(self) -> dict:
        return asdict(self)


# What --demo changes, unless the flag is given explicitly.
DEMO_PRESET = {
    "data": str(DEMO_DATA_DIR),
    "classes": str(DEMO_DATA_DIR / "classes.txt"),
    "input_size": "128",
    "epochs": 14,
    "freeze_epochs": 0,
    "batch_size": 16,
    "optimizer": "sgd",  # the default recipe (lr 1e-2 at batch 64: 2.5e-3 at 16); it beat Adam here (docs/recipe.md)
    "mosaic": 0.3,
    "mixup": 0.0,
    "mosaic_ratio": 0.5,
    "save_dir": "logs/demo",
    "exist_ok": True,  # the demo replaces its own earlier run (the docs read logs/demo); not with --output
    "save_period": 0,
    "eval_period": 7,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per TrainConfig field; unset flags stay None so presets can fill them.

    The output folder is `--output` (the field `save_dir`, as settings.json names it); its older
    names (`--save-dir`, ...) are hidden aliases, as in every script (utils/cli.py).
    """
    for f in fields(TrainConfig):
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        if flag == "--output":
            for alias in OUTPUT_ALIASES:
                parser.add_argument(alias, dest=f.name, type=str, default=None, help=argparse.SUPPRESS)
        default = f.default
        help_text = f.metadata["help"] + ("" if default is None else f" (default: {default})")
        if isinstance(default, bool):  # --flag for a default off, --flag / --no-flag for a default on
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, default=None, help=help_text)
            continue
        kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(f.type, str)
        extra = {"nargs": f.metadata["nargs"], "metavar": "SET"} if "nargs" in f.metadata else {}
        if "action" in f.metadata:
            extra["action"] = f.metadata["action"]
        parser.add_argument(
            flag, dest=f.name, type=kind, default=None, choices=f.metadata.get("choices"), help=help_text, **extra
        )
        for alias in f.metadata.get("aliases", ()):
            parser.add_argument(alias, dest=f.name, type=kind, default=None, help=argparse.SUPPRESS, **extra)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Explicit flags, then the demo preset (with --demo), then the table's defaults."""
    given = {k: v for k, v in vars(args).items() if v is not None}
    if isinstance(given.get("data"), list) and len(given["data"]) == 1:  # one --data: a path, as before
        given["data"] = given["data"][0]
    values = dict(DEMO_PRESET) if given.get("demo") else {}
    if "save_dir" in given:  # a folder the user names is protected as usual, demo or not
        values.pop("exist_ok", None)
    values.update(given)
    return TrainConfig(**values)


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill the defaults that depend on other settings and validate."""
    from nets.attention import PHI_TO_ATTENTION, resolve_attention

    values = config.to_dict()
    try:
        values["attention"] = resolve_attention(phi=values["phi"], attention=values["attention"])
    except ValueError as err:  # nets raises plain ValueErrors for its arguments
        raise ConfigError(str(err)) from None
    # A user block has no phi.
    values["phi"] = PHI_TO_ATTENTION.index(values["attention"]) if values["attention"] in PHI_TO_ATTENTION else None
    if values["attention_at"] is not None and values["attention"] == "none":
        # Not an error: ablation.py passes its --attention-at to every run, phi 0's too.
        logger.warning(f"--attention-at {values['attention_at']} is ignored: phi 0 (--attention none) has no blocks")
        values["attention_at"] = None
    if values["attention_at"] is not None:  # canonical: comma-separated, in network order
        from nets.yolo import parse_points

        try:
            values["attention_at"] = ",".join(parse_points(values["attention_at"]))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if values["freeze_epochs"] is None:
        values["freeze_epochs"] = min(50, values["epochs"]) if values["weights"] else 0
    if values["lr"] is None:
        values["lr"] = DEFAULT_LR[values["optimizer"]]
    if values["weight_decay"] is None:
        values["weight_decay"] = 5e-4 if values["optimizer"] == "sgd" else 0.0
    if values["weight_decay_mode"] is None:
        values["weight_decay_mode"] = "coupled" if values["optimizer"] == "sgd" else "decoupled"
    if values["warmup_epochs"] is None:
        values["warmup_epochs"] = float(min(max(0.05 * values["epochs"], 1), 3))
    if values["min_lr_epochs"] is None:  # YOLOX's no-aug tail as bubbliiiing sizes it
        values["min_lr_epochs"] = float(min(max(0.05 * values["epochs"], 1), 15))
    values["precision"] = resolve_precision(values["precision"], values["mixed_precision"])
    values["mixed_precision"] = values["precision"] == "float16"
    resolved = TrainConfig(**values)
    parse_input_size(resolved.input_size)  # validates (InputSizeError)
    if not 0 <= resolved.freeze_epochs <= resolved.epochs:
        raise ConfigError(f"--freeze-epochs must be in [0, --epochs], got {resolved.freeze_epochs}")
    if resolved.epochs < 1 or resolved.batch_size < 1 or resolved.freeze_batch_size < 1:
        raise ConfigError("--epochs and the batch sizes must be >= 1")
    for name in ("mosaic", "mixup", "mosaic_ratio", "label_smoothing"):
        if not 0.0 <= getattr(resolved, name) <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1]")
    if not 0.0 <= resolved.jitter < 1.0:
        raise ConfigError(f"--jitter must be in [0, 1), got {resolved.jitter}")
    if not 0.0 < resolved.scale_min <= resolved.scale_max:
        raise ConfigError(
            f"--scale-min and --scale-max must satisfy 0 < min <= max, got {resolved.scale_min}, {resolved.scale_max}"
        )
    if resolved.patience is not None and resolved.patience < 0:
        raise ConfigError(f"--patience must be >= 0 (0: never stop early), got {resolved.patience}")
    if resolved.time is not None and not resolved.time > 0:
        raise ConfigError(f"--time must be > 0 minutes, got {resolved.time}")
    return resolved


def resolve_precision(precision: str, mixed_precision: bool = False) -> str:
    """--precision with "auto" made concrete for this machine (utils.inference.precision's choice, the one
    --half makes for inference); --mixed-precision is --precision float16."""
    if mixed_precision:
        if precision not in ("auto", "float16"):
            raise ConfigError(f"--mixed-precision is --precision float16; it contradicts --precision {precision}")
        return "float16"
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    from utils.inference.precision import half_precision

    return half_precision()
