"""Charts of an `EvaluationResult`: PR curve per class, AP per class, object / detection counts.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display needed), in the label
fonts of utils.inference.drawing, so class names in Chinese, Japanese or Korean show as characters.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.evaluation.metrics import EvaluationResult
from utils.inference.drawing import matplotlib_families


def _label_fonts(plot):
    """Run a plot function with the label fonts as matplotlib's font family."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"font.family": list(matplotlib_families())}):
            return plot(*args, **kwargs)

    return wrapper


def safe_filename(name: str) -> str:
    """A class name usable as a file name: anything but letters, digits, '.', '-' becomes '_'."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "class"


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return path


@_label_fonts
def plot_pr_curve(result: EvaluationResult, class_id: int, class_name: str, path: str | Path) -> Path:
    """Precision against recall over the ranked detections, with its monotone envelope (whose area
    is the all-point AP) and the point at `result.score_threshold`."""
    recall, precision = result.pr_curves[class_id]
    scores = result.pr_scores[class_id]
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    ap = result.ap[class_id]
    if len(recall) and result.num_gt[class_id]:
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        axes.plot(np.r_[0.0, recall], np.r_[precision[0], precision], color="tab:blue", lw=1, label="precision")
        axes.fill_between(
            np.r_[0.0, recall],
            np.r_[envelope[0], envelope],
            step="pre",
            alpha=0.2,
            color="tab:blue",
            label="interpolated (area = AP)",
        )
        above = np.flatnonzero(scores >= result.score_threshold)
        if above.size:
            i = above[-1]
            axes.plot(
                recall[i],
                precision[i],
                "o",
                color="tab:red",
                label=f"score >= {result.score_threshold:g}: P={precision[i]:.2f} R={recall[i]:.2f}",
            )
        axes.legend(loc="lower left")
    else:
        axes.text(
            0.5,
            0.5,
            "no ground truth" if not result.num_gt[class_id] else "no detections",
            ha="center",
            va="center",
            transform=axes.transAxes,
        )
    title_ap = "n/a" if np.isnan(ap) else f"{ap * 100:.2f}%"
    axes.set_title(f"{class_name}: AP@{result.iou_threshold:g} = {title_ap}")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1.0)
    axes.set_ylim(0, 1.05)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, Path(path))


@_label_fonts
def plot_ap_per_class(result: EvaluationResult, class_names: list[str], path: str | Path) -> Path:
    """Horizontal bars of AP per class, sorted; classes without ground truth are listed as n/a."""
    order = np.argsort(np.nan_to_num(result.ap, nan=-1.0))
    figure = Figure(figsize=(8, max(3.0, 0.3 * len(class_names) + 1.5)))
    axes = figure.add_subplot()
    values = np.nan_to_num(result.ap[order], nan=0.0)
    axes.barh(np.arange(len(order)), values, color="tab:blue")
    for y, c in enumerate(order):
        label = "n/a (no ground truth)" if np.isnan(result.ap[c]) else f"{result.ap[c]:.3f}"
        axes.text(values[y] + 0.01, y, label, va="center", fontsize=8)
    axes.set_yticks(np.arange(len(order)), [class_names[c] for c in order], fontsize=8)
    axes.set_xlim(0, 1.15)
    axes.set_xlabel(f"AP@{result.iou_threshold:g}")
    axes.set_title(f"mAP@{result.iou_threshold:g} = {result.map * 100:.2f}%")
    figure.tight_layout()
    return _save(figure, Path(path))


@_label_fonts
def plot_counts_per_class(result: EvaluationResult, class_names: list[str], path: str | Path) -> Path:
    """Ground-truth objects (non-difficult) and detections per class, with the TP / FP split of the
    detections scoring >= the score threshold."""
    y = np.arange(len(class_names))
    figure = Figure(figsize=(10, max(3.0, 0.35 * len(class_names) + 1.5)))
    axes = figure.add_subplot()
    height = 0.27
    axes.barh(y - height, result.num_gt, height, label="ground truth", color="tab:green")
    axes.barh(y, result.num_det, height, label="detections (all scores)", color="tab:gray")
    axes.barh(y + height, result.tp, height, label=f"TP at score >= {result.score_threshold:g}", color="tab:blue")
    axes.barh(y + height, result.fp, height, left=result.tp, label="FP", color="tab:red")
    for row in range(len(class_names)):
        axes.text(result.num_gt[row], row - height, f" {result.num_gt[row]}", va="center", fontsize=7)
        axes.text(result.num_det[row], row, f" {result.num_det[row]}", va="center", fontsize=7)
    axes.set_yticks(y, class_names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("count")
    axes.set_title("Ground truth and detections per class")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    return _save(figure, Path(path))


def write_plots(result: EvaluationResult, class_names: list[str], out_dir: str | Path) -> list[Path]:
    """All charts into `out_dir`: pr_curves/<class>.png, ap_per_class.png, counts_per_class.png."""
    out_dir = Path(out_dir)
    (out_dir / "pr_curves").mkdir(parents=True, exist_ok=True)
    paths, used = [], set()
    for c, name in enumerate(class_names):
        stem = safe_filename(name)
        if stem in used:  # two names that differ only in unsafe characters
            stem = f"{stem}_{c}"
        used.add(stem)
        paths.append(plot_pr_curve(result, c, name, out_dir / "pr_curves" / f"{stem}.png"))
    paths.append(plot_ap_per_class(result, class_names, out_dir / "ap_per_class.png"))
    paths.append(plot_counts_per_class(result, class_names, out_dir / "counts_per_class.png"))
    return paths
