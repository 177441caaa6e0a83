"""An ablation study's numbers: means over seeds with Student-t confidence intervals, paired
differences to a baseline and their verdicts, the table (Markdown, CSV, JSON), learning curves,
the plots, and latency measured round-robin across models.

    interval = mean_interval([0.81, 0.83, 0.80])          # mean, 95% CI over seeds (t, n - 1 df)
    diff = paired_difference({0: 0.83, 1: 0.85}, {0: 0.81, 1: 0.82})   # same seeds, block - baseline
    verdict(diff)                                         # "better" / "worse" / "no detectable difference"
    rows = build_rows(results, blocks, costs, latency)    # one StudyRow per row of the study
    write_table(rows, "ablation_out", notes)              # table.md, table.csv, table.json

The verdict reads the 95% confidence interval of the paired difference: "better" when it lies
above 0, "worse" when below, "no detectable difference" when it holds 0, which says the seeds'
spread is as large as the difference (it does not say that the blocks are equal). With one seed
(or one common seed) there is no interval and no verdict. NumPy only: Student's t quantiles come
from a table (two-sided 95%, df 1-30, 40, 60, 120; beyond 120 the normal 1.96).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from utils.errors import YoloError

# t(0.975, df) for df = 1 ... 30, then for some larger df.
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_T_975_LARGE = ((40, 2.021), (60, 2.000), (120, 1.980))
Z_975 = 1.960

BETTER, WORSE, NO_DIFFERENCE, NO_INTERVAL = "better", "worse", "no detectable difference", "one seed: no CI"


class StudyError(YoloError):
    """A study that cannot be run or summarised as asked; the message says why."""


def t_quantile_975(df: int) -> float:
    """Student's t 97.5% quantile (a two-sided 95% interval) for `df` >= 1 degrees of freedom.

    Exact to 3 decimals for df 1-30, 40, 60 and 120; between those, the value of the next smaller
    tabulated df (slightly wider: conservative); beyond 120, 1.96.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T_975):
        return _T_975[df - 1]
    if df > _T_975_LARGE[-1][0]:
        return Z_975
    value = _T_975[-1]
    for threshold, t in _T_975_LARGE:
        if df >= threshold:
            value = t
    return value


@dataclass(frozen=True)
class Interval:
    """A mean over `n` values and its two-sided 95% confidence interval (Student t, n - 1 df);
    `low` and `high` are None when n < 2 (no interval)."""

    mean: float
    n: int
    low: float | None = None
    high: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    def to_dict(self) -> dict:
        return {"mean": self.mean, "n": self.n, "ci95_low": self.low, "ci95_high": self.high}


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean of `values` and its 95% CI: mean +- t(0.975, n - 1) * s / sqrt(n), s the sample standard
    deviation (n - 1 in the denominator). One value: the mean alone."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_interval needs at least one value")
    mean = float(np.mean(values))
    if len(values) < 2:
        return Interval(mean, len(values))
    half = t_quantile_975(len(values) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return Interval(mean, len(values), mean - half, mean + half)


def paired_difference(values: Mapping[int, float], baseline: Mapping[int, float]) -> Interval | None:
    """The mean of `values[seed] - baseline[seed]` over the seeds both have, with its 95% CI (a paired
    t interval: the seed's data order and initialisation are shared, so they cancel). None when
    they share no seed."""
    common = sorted(set(values) & set(baseline))
    if not common:
        return None
    return mean_interval([values[s] - baseline[s] for s in common])


def verdict(difference: Interval | None) -> str | None:
    """"better" when the CI of the difference lies above 0, "worse" when below, "no detectable
    difference" when it holds 0 (a bound exactly 0 included); NO_INTERVAL without an interval;
    None without a difference."""
    if difference is None:
        return None
    if difference.low is None:
        return NO_INTERVAL
    if difference.low > 0:
        return BETTER
    if difference.high < 0:
        return WORSE
    return NO_DIFFERENCE


# ---------------------------------------------------------------------------------------------- the table
@dataclass
class RunResult:
    """One finished run: its row of the study (`key`, e.g. "phi3"), its seed, and its test mAPs (fractions)."""

    key: str
    seed: int
    map50: float
    map50_95: float


@dataclass
class StudyRow:
    """One row of the study: a block (`key` "phi0" ... or a variant's name) and what it is (`block`).

    params: every weight (batch-norm statistics included); gflops: at the study's input size
    (nets.stats). latency_ms: device ("cpu", "gpu") -> median ms per image, batch 1.
    map50, map50_95: seed -> the run's test mAP. The intervals and differences are derived from
    them by `build_rows` (differences: this block minus the baseline, on the seeds both have).
    """

    key: str
    block: str
    params: int | None = None
    gflops: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    map50: dict[int, float] = field(default_factory=dict)
    map50_95: dict[int, float] = field(default_factory=dict)
    map50_interval: Interval | None = None
    map50_95_interval: Interval | None = None
    is_baseline: bool = False
    diff50: Interval | None = None
    diff50_95: Interval | None = None
    verdict50: str | None = None
    verdict50_95: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("map50_interval", "map50_95_interval", "diff50", "diff50_95"):
            value = getattr(self, key)
            data[key] = None if value is None else value.to_dict()
        data["map50"] = {str(k): v for k, v in self.map50.items()}
        data["map50_95"] = {str(k): v for k, v in self.map50_95.items()}
        return data


def build_rows(
    results: Sequence[RunResult],
    blocks: Mapping[str, str],
    costs: Mapping[str, tuple[int, float]] | None = None,
    latency: Mapping[str, Mapping[str, float]] | None = None,
    baseline: str = "phi0",
) -> list[StudyRow]:
    """One StudyRow per key of `blocks` (key -> what the row is), in its order.

    costs: key -> (params, GFLOPs). latency: device -> key -> median ms. baseline: the key the
    others are compared with, seed by seed (no differences when it has no finished run).
    """
    costs, latency = costs or {}, latency or {}
    rows = []
    for key, block in blocks.items():
        row = StudyRow(key, block, *costs.get(key, (None, None)))
        row.latency_ms = {device: float(times[key]) for device, times in latency.items() if key in times}
        for result in sorted(results, key=lambda r: r.seed):
            if result.key == key:
                row.map50[result.seed], row.map50_95[result.seed] = result.map50, result.map50_95
        if row.map50:
            row.map50_interval = mean_interval(list(row.map50.values()))
            row.map50_95_interval = mean_interval(list(row.map50_95.values()))
        rows.append(row)
    base = next((row for row in rows if row.key == baseline and row.map50), None)
    for row in rows:
        row.is_baseline = row.key == baseline
        if base is None or row.is_baseline or not row.map50:
            continue
        row.diff50 = paired_difference(row.map50, base.map50)
        row.diff50_95 = paired_difference(row.map50_95, base.map50_95)
        row.verdict50, row.verdict50_95 = verdict(row.diff50), verdict(row.diff50_95)
    return rows


def _mean_cell(interval: Interval | None) -> str:
    if interval is None:
        return "no finished run"
    if interval.low is None:
        return f"{interval.mean:.3f} (1 seed, no CI)"
    return f"{interval.mean:.3f} ± {interval.half_width:.3f}"


def _difference_cell(row: StudyRow, difference: Interval | None, baseline: str) -> str:
    if row.is_baseline:
        return "baseline"
    if difference is None:
        return "no finished run" if not row.map50 else f"no {baseline} run with the same seed"
    if difference.low is None:
        return f"{difference.mean:+.3f} (1 seed, no CI)"
    return f"{difference.mean:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]"


def _number(value, digits: int) -> str:
    return "" if value is None else f"{value:,.{digits}f}" if digits else f"{value:,}"


def markdown_table(rows: Sequence[StudyRow], baseline: str = "phi0") -> str:
    """The table as Markdown: cost, latency (GPU only when measured), mAPs as mean ± half the 95%
    CI over seeds, and the paired difference to the baseline with its CI and verdict."""
    devices = [d for d in ("cpu", "gpu") if any(d in row.latency_ms for row in rows)]
    header = ["row", "block", "params", "GFLOPs", *(f"{d.upper()} ms" for d in devices), "seeds"]
    header += ["mAP@0.5", "mAP@.5:.95", f"Δ mAP@0.5 vs {baseline} (95% CI)", "verdict @0.5"]
    header += [f"Δ mAP@.5:.95 vs {baseline} (95% CI)", "verdict @.5:.95"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.key, row.block, _number(row.params, 0), _number(row.gflops, 3)]
        cells += [_number(row.latency_ms.get(d), 1) for d in devices]
        cells += [str(len(row.map50)), _mean_cell(row.map50_interval), _mean_cell(row.map50_95_interval)]
        cells += [_difference_cell(row, row.diff50, baseline), "" if row.is_baseline else row.verdict50 or ""]
        cells += [_difference_cell(row, row.diff50_95, baseline), "" if row.is_baseline else row.verdict50_95 or ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "key", "block", "params", "gflops", "cpu_ms", "gpu_ms", "seeds",
    "map50_mean", "map50_ci95_low", "map50_ci95_high", "map50_95_mean", "map50_95_ci95_low", "map50_95_ci95_high",
    "diff_map50_mean", "diff_map50_ci95_low", "diff_map50_ci95_high", "verdict_map50",
    "diff_map50_95_mean", "diff_map50_95_ci95_low", "diff_map50_95_ci95_high", "verdict_map50_95",
)  # fmt: skip


def _csv_row(row: StudyRow) -> dict:
    def parts(interval: Interval | None) -> tuple:
        return (None, None, None) if interval is None else (interval.mean, interval.low, interval.high)

    values = [row.key, row.block, row.params, row.gflops, row.latency_ms.get("cpu"), row.latency_ms.get("gpu")]
    values += [len(row.map50), *parts(row.map50_interval), *parts(row.map50_95_interval)]
    values += [*parts(row.diff50), row.verdict50, *parts(row.diff50_95), row.verdict50_95]
    return {k: "" if v is None else v for k, v in zip(CSV_COLUMNS, values, strict=True)}


def _atomic_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)


def write_table(
    rows: Sequence[StudyRow],
    out: str | Path,
    notes: Sequence[str] = (),
    settings: dict | None = None,
    baseline: str = "phi0",
) -> dict[str, Path]:
    """table.md (the Markdown table, then `notes`), table.csv (numbers only, full precision) and
    table.json (every row with its per-seed values, `notes` and `settings`) in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "json": out / "table.json"}
    markdown = markdown_table(rows, baseline)
    if notes:
        markdown += "\n" + "".join(f"- {note}\n" for note in notes)
    _atomic_text(paths["md"], markdown)
    temp = out / ".table.csv.tmp"
    with open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in rows)
    temp.replace(paths["csv"])
    data = {"rows": [row.to_dict() for row in rows], "notes": list(notes), "settings": settings or {}}
    _atomic_text(paths["json"], json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return paths


# ---------------------------------------------------------------------------------------------- learning curves
@dataclass
class LearningCurve:
    """A run's per-epoch record: epochs from 1; loss and val_loss per epoch (None where missing);
    val mAP@0.5 at the epochs it was evaluated."""

    epochs: list[int]
    loss: list[float | None]
    val_loss: list[float | None]
    map_epochs: list[int]
    map_values: list[float]


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


# results.csv column names (compared without case and punctuation) that hold each series.
_CSV_NAMES = {
    "epoch": ("epoch",),
    "loss": ("loss", "trainloss"),
    "val_loss": ("valloss",),
    "map": ("valmap50", "map50", "valmap", "metricsmap50", "metricsmap50b", "valmap05"),
}


def _float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _curve_from_csv(path: Path) -> LearningCurve:
    with open(path, newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    columns = {_key(name): name for name in (table[0].keys() if table else [])}

    def column(kind: str) -> str | None:
        return next((columns[k] for k in _CSV_NAMES[kind] if k in columns), None)

    epoch_col, loss_col, val_col, map_col = (column(k) for k in ("epoch", "loss", "val_loss", "map"))
    curve = LearningCurve([], [], [], [], [])
    for index, record in enumerate(table):
        epoch = int(_float(record[epoch_col]) or index + 1) if epoch_col else index + 1
        curve.epochs.append(epoch)
        curve.loss.append(_float(record[loss_col]) if loss_col else None)
        curve.val_loss.append(_float(record[val_col]) if val_col else None)
        value = _float(record[map_col]) if map_col else None
        if value is not None:
            curve.map_epochs.append(epoch)
            curve.map_values.append(value)
    return curve


def read_learning_curve(run_dir: str | Path) -> LearningCurve | None:
    """A run's learning curve from its results.csv (one row per epoch) when it has one, else from
    history.json (train.py's History); None when it has neither."""
    run_dir = Path(run_dir)
    if (run_dir / "results.csv").is_file():
        return _curve_from_csv(run_dir / "results.csv")
    if (run_dir / "history.json").is_file():
        history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
        loss = list(history.get("loss", []))
        return LearningCurve(
            epochs=list(range(1, len(loss) + 1)),
            loss=loss,
            val_loss=list(history.get("val_loss", [None] * len(loss))),
            map_epochs=list(history.get("map_epochs", [])),
            map_values=list(history.get("map_values", [])),
        )
    return None


# ---------------------------------------------------------------------------------------------- plots
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _colors(count: int) -> list:
    from matplotlib import colormaps

    return [colormaps["tab10"](i % 10) for i in range(count)]


def plot_map_vs_latency(rows: Sequence[StudyRow], path: str | Path, device: str = "cpu") -> Path | None:
    """mAP@0.5 and mAP@.5:.95 (mean, error bars = the 95% CI over seeds) against the median latency
    on `device`, a point per block. None (no file) when no row has both."""
    rows = [r for r in rows if r.map50_interval is not None and device in r.latency_ms]
    if not rows:
        return None
    figure = _figure(11, 4.4)
    colors = _colors(len(rows))
    for index, (attr, label) in enumerate((("map50_interval", "mAP@0.5"), ("map50_95_interval", "mAP@.5:.95"))):
        axes = figure.add_subplot(1, 2, index + 1)
        clipped = False
        for row, color in zip(rows, colors, strict=True):
            interval = getattr(row, attr)
            x = row.latency_ms[device]
            error = None
            if interval.low is not None:
                # mAP lies in [0, 1]: a t interval of few seeds reaches past it; the bar stops there.
                low, high = max(interval.low, 0.0), min(interval.high, 1.0)
                clipped |= (low, high) != (interval.low, interval.high)
                error = [[interval.mean - low], [high - interval.mean]]
            seeds = f"{interval.n} seed{'s' if interval.n > 1 else ''}"
            axes.errorbar(
                [x], [interval.mean], yerr=error, fmt="o", color=color, capsize=4,
                label=f"{row.key} {row.block} ({seeds})",
            )  # fmt: skip
            per_seed = list(getattr(row, attr.removesuffix("_interval")).values())
            axes.plot([x] * len(per_seed), per_seed, "x", color=color, alpha=0.6, markersize=5)
        axes.set_ylim(0.0, 1.0)
        axes.margins(x=0.15)
        axes.set_xlabel(f"{device.upper()} latency, ms per image (batch 1, median)")
        axes.set_ylabel(f"test {label}" + (" (bars clipped to [0, 1])" if clipped else ""))
        axes.grid(alpha=0.3)
        if index == 0:
            axes.legend(fontsize=7, loc="lower right")
    figure.suptitle("o: mean over seeds, bars: its 95% CI (Student t), x: each seed", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return Path(path)


def plot_learning_curves(
    curves: Mapping[str, Mapping[int, LearningCurve]], blocks: Mapping[str, str], path: str | Path
) -> Path | None:
    """A column per row of the study (key -> seed -> curve; in `blocks`' order, then any other key): val
    mAP@0.5 per epoch (top) and train / val loss (bottom, dashed val), a line per seed. None (no file)
    without any curve."""
    keys = [key for key in (*blocks, *(k for k in curves if k not in blocks)) if curves.get(key)]
    if not keys:
        return None
    figure = _figure(3.2 * len(keys) + 0.6, 6)
    map_axes = loss_axes = None
    for column, key in enumerate(keys):
        map_axes = figure.add_subplot(2, len(keys), column + 1, sharey=map_axes)
        loss_axes = figure.add_subplot(2, len(keys), len(keys) + column + 1, sharey=loss_axes)
        seeds = sorted(curves[key])
        for seed, color in zip(seeds, _colors(len(seeds)), strict=True):
            curve = curves[key][seed]
            if curve.map_epochs:
                map_axes.plot(curve.map_epochs, curve.map_values, marker=".", color=color, label=f"seed {seed}")
            loss = [np.nan if v is None else v for v in curve.loss]
            val = [np.nan if v is None else v for v in curve.val_loss]
            loss_axes.plot(curve.epochs, loss, color=color, marker=".", label=f"seed {seed} train")
            if not np.all(np.isnan(val)):
                loss_axes.plot(curve.epochs, val, color=color, marker=".", linestyle="--", label=f"seed {seed} val")
        map_axes.set_title(f"{key} {blocks.get(key, '')}", fontsize=9)
        map_axes.set_ylabel("val mAP@0.5")
        loss_axes.set_ylabel("loss")
        loss_axes.set_xlabel("epoch")
        for axes in (map_axes, loss_axes):
            axes.grid(alpha=0.3)
        map_axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return Path(path)


# ---------------------------------------------------------------------------------------------- latency
def measure_latency(
    models: Mapping[str, object],
    image: np.ndarray,
    input_hw: tuple[int, int],
    device: str = "/CPU:0",
    rounds: int = 30,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median milliseconds per image of each model, image to boxes (letterbox, model, decoding, NMS:
    `Detector.detect([image])`, batch 1), on the TensorFlow `device`.

    The models are timed round-robin, one call each per round, so a load that comes and goes on
    a shared machine falls on all of them alike. models: key -> a nets.yolo.YoloV4Tiny.
    image: uint8 RGB (H, W, 3).
    """
    import tensorflow as tf

    from utils.inference.detector import Detector

    times: dict[str, list[float]] = {key: [] for key in models}
    with tf.device(device):
        detectors = {key: Detector.from_model(m, input_shape=input_hw, batch_size=1) for key, m in models.items()}
        for detector in detectors.values():
            for _ in range(warmup):  # trace, allocate
                detector.detect([image])
        for _ in range(rounds):
            for key, detector in detectors.items():
                start = clock()
                detector.detect([image])
                times[key].append(clock() - start)
    return {key: 1000.0 * statistics.median(values) for key, values in times.items()}
