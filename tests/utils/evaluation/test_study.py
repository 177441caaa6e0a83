"""The ablation study's statistics, table, learning curves and plots on known inputs."""

import csv
import json
import math

import numpy as np
import pytest

from utils.evaluation.study import (
    BETTER,
    NO_DIFFERENCE,
    NO_INTERVAL,
    WORSE,
    Interval,
    RunResult,
    build_rows,
    markdown_table,
    mean_interval,
    paired_difference,
    plot_learning_curves,
    plot_map_vs_latency,
    read_learning_curve,
    t_quantile_975,
    verdict,
    write_table,
)


def _t_cdf(t: float, df: int) -> float:
    """Student's t CDF by integrating its density (Simpson's rule on a fine grid)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = np.linspace(0.0, t, 200_001)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    h = x[1] - x[0]
    integral = h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
    return 0.5 + integral


@pytest.mark.parametrize("df", [*range(1, 31), 40, 60, 120])
def test_the_t_table_gives_the_975_quantile_to_3_decimals(df):
    t = t_quantile_975(df)
    assert _t_cdf(t - 0.0005, df) < 0.975 < _t_cdf(t + 0.0005, df)


def test_t_between_and_beyond_the_table_is_conservative_then_normal():
    assert t_quantile_975(35) == 2.042 and _t_cdf(2.042, 35) > 0.975  # df 30's: a little wider
    assert t_quantile_975(100) == 2.000 and t_quantile_975(121) == 1.96
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_mean_interval_on_known_values():
    interval = mean_interval([1.0, 2.0, 3.0])  # mean 2, s = 1, n = 3
    half = 4.303 / math.sqrt(3)
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.low == pytest.approx(2 - half) and interval.high == pytest.approx(2 + half)
    assert interval.half_width == pytest.approx(half)
    one = mean_interval([0.7])
    assert (one.mean, one.n, one.low, one.high, one.half_width) == (0.7, 1, None, None, None)
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_difference_uses_the_common_seeds_and_sees_what_unpaired_intervals_miss():
    block = {0: 0.82, 1: 0.85, 2: 0.83}
    base = {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.90}  # seed 3 has no partner: left out
    difference = paired_difference(block, base)
    diffs = [0.02, 0.03, 0.02]
    half = 4.303 * np.std(diffs, ddof=1) / math.sqrt(3)
    assert difference.n == 3 and difference.mean == pytest.approx(np.mean(diffs))
    assert difference.low == pytest.approx(np.mean(diffs) - half) and difference.high == pytest.approx(
        np.mean(diffs) + half
    )
    assert verdict(difference) == BETTER
    # The blocks' own intervals overlap widely: the seeds move both together, pairing removes that.
    own, other = mean_interval(list(block.values())), mean_interval([0.80, 0.82, 0.81])
    assert own.low < other.high
    assert paired_difference({5: 0.1}, base) is None


@pytest.mark.parametrize(
    "interval, expected",
    [
        (Interval(0.1, 3, 1e-9, 0.2), BETTER),
        (Interval(0.1, 3, 0.0, 0.2), NO_DIFFERENCE),  # a bound at exactly 0: not excluded
        (Interval(0.0, 3, -0.1, 0.1), NO_DIFFERENCE),
        (Interval(-0.1, 3, -0.2, 0.0), NO_DIFFERENCE),
        (Interval(-0.1, 3, -0.2, -1e-9), WORSE),
        (Interval(0.3, 1), NO_INTERVAL),
        (None, None),
    ],
)
def test_verdict_thresholds(interval, expected):
    assert verdict(interval) == expected


RESULTS = [
    RunResult("phi0", 0, 0.80, 0.50), RunResult("phi0", 1, 0.82, 0.52), RunResult("phi0", 2, 0.81, 0.51),
    RunResult("phi1", 0, 0.82, 0.49), RunResult("phi1", 1, 0.85, 0.53), RunResult("phi1", 2, 0.83, 0.50),
    RunResult("phi4", 0, 0.78, 0.48),
]  # fmt: skip
# The rows in the table's order: the blocks, then a variant (no run finished).
BLOCKS = {"phi0": "none", "phi1": "se", "phi3": "eca", "phi4": "ca", "weighted": "--fusion weighted"}


def test_rows_pair_each_block_with_the_baseline():
    costs = {"phi0": (100, 1.0), "phi1": (120, 1.1), "phi4": (110, 1.2)}
    latency = {"cpu": {"phi0": 10.0, "phi1": 11.0, "phi4": 12.0}}
    rows = {row.key: row for row in build_rows(RESULTS, BLOCKS, costs, latency)}
    assert list(rows) == ["phi0", "phi1", "phi3", "phi4", "weighted"]
    assert rows["phi0"].is_baseline and rows["phi0"].diff50 is None and rows["phi0"].map50_interval.n == 3
    assert rows["phi1"].verdict50 == BETTER and rows["phi1"].diff50.mean == pytest.approx(0.07 / 3)
    assert rows["phi1"].verdict50_95 == NO_DIFFERENCE  # diffs -0.01, +0.01, -0.01
    assert rows["phi3"].map50_interval is None and rows["phi3"].diff50 is None and rows["phi3"].params is None
    assert rows["phi4"].verdict50 == NO_INTERVAL and rows["phi4"].diff50.mean == pytest.approx(-0.02)
    assert (rows["phi4"].params, rows["phi4"].gflops, rows["phi4"].latency_ms) == (110, 1.2, {"cpu": 12.0})
    # Without a finished baseline run there is nothing to compare with.
    alone = build_rows([r for r in RESULTS if r.key != "phi0"], BLOCKS)
    assert all(row.diff50 is None and row.verdict50 is None for row in alone)


def test_the_table_files(tmp_path):
    latency = {"cpu": {"phi0": 10.0, "phi1": 11.0}, "gpu": {"phi0": 1.5}}
    rows = build_rows(RESULTS, BLOCKS, {"phi0": (100, 1.0)}, latency)
    paths = write_table(rows, tmp_path, notes=["a note"], settings={"seeds": [0, 1, 2]})
    markdown = paths["md"].read_text(encoding="utf-8")
    header, _, *lines = markdown.splitlines()
    assert "CPU ms" in header and "GPU ms" in header and "Δ mAP@0.5 vs phi0 (95% CI)" in header
    assert lines[0].startswith("| phi0 | none | 100 | 1.000 | 10.0 | 1.5 | 3 | 0.810 ± 0.025 |")
    assert "| baseline |" in lines[0]
    assert "| +0.023 [+0.009, +0.038] | better |" in lines[1]
    assert "no detectable difference" in lines[1]
    assert "| phi3 | eca |" in lines[2] and "no finished run" in lines[2]
    assert lines[4].startswith("| weighted | --fusion weighted |") and "no finished run" in lines[4]
    assert "0.780 (1 seed, no CI)" in lines[3] and "-0.020 (1 seed, no CI) | one seed: no CI" in lines[3]
    assert markdown.rstrip().endswith("- a note")
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [r["key"] for r in table] == ["phi0", "phi1", "phi3", "phi4", "weighted"]
    assert float(table[1]["diff_map50_ci95_low"]) > 0 and table[1]["verdict_map50"] == BETTER
    assert table[2]["map50_mean"] == "" and table[0]["gpu_ms"] == "1.5"
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["rows"][1]["map50"] == {"0": 0.82, "1": 0.85, "2": 0.83}
    assert data["notes"] == ["a note"] and data["settings"] == {"seeds": [0, 1, 2]}
    # No GPU measured: no GPU column.
    assert "GPU ms" not in markdown_table(build_rows(RESULTS, BLOCKS, latency={"cpu": {"phi0": 1.0}}))


def test_learning_curves_from_history_json_or_results_csv(tmp_path):
    history = {"loss": [5.0, 4.0, 3.0], "val_loss": [6.0, None, 4.5], "lr": [1, 1, 1]}
    history.update(map_epochs=[2, 3], map_values=[0.1, 0.3])
    (tmp_path / "history.json").write_text(json.dumps(history))
    curve = read_learning_curve(tmp_path)
    assert curve.epochs == [1, 2, 3] and curve.loss == [5.0, 4.0, 3.0] and curve.val_loss == [6.0, None, 4.5]
    assert (curve.map_epochs, curve.map_values) == ([2, 3], [0.1, 0.3])
    # A per-epoch results.csv, when there is one, is read instead (column names in several spellings).
    table = "epoch,train/loss,val/loss,metrics/mAP50,lr\n1,5.5,6.1,,0.1\n2,4.5,,0.2,0.1\n"
    (tmp_path / "results.csv").write_text(table)
    curve = read_learning_curve(tmp_path)
    assert curve.epochs == [1, 2] and curve.loss == [5.5, 4.5] and curve.val_loss == [6.1, None]
    assert (curve.map_epochs, curve.map_values) == ([2], [0.2])
    assert read_learning_curve(tmp_path / "nothing") is None


def test_plots_are_written(tmp_path):
    rows = build_rows(RESULTS, BLOCKS, latency={"cpu": {"phi0": 10.0, "phi1": 11.0, "phi4": 12.0}})
    assert plot_map_vs_latency(rows, tmp_path / "m.png").stat().st_size > 10_000
    assert plot_map_vs_latency(rows, tmp_path / "g.png", device="gpu") is None  # not measured there
    history = {"loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "lr": [1, 1], "map_epochs": [1, 2], "map_values": [0.2, 0.4]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    curve = read_learning_curve(tmp_path)
    path = plot_learning_curves({"phi0": {0: curve, 1: curve}, "weighted": {0: curve}}, BLOCKS, tmp_path / "c.png")
    assert path.stat().st_size > 10_000
    assert plot_learning_curves({}, BLOCKS, tmp_path / "none.png") is None
