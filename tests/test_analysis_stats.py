import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.params import Params
from analysis.stats import (
    format_interval,
    higher_is_better,
    interval_frame,
    mean_interval,
    metric_bounds,
    seed_mean_intervals,
    welch_worse_p,
)


def test_metric_direction_and_range():
    assert higher_is_better("val_iou") and not higher_is_better("val_loss")
    assert metric_bounds("val_miou") == (0.0, 1.0)
    assert metric_bounds("val_dice") == (0.0, 1.0)
    assert metric_bounds("val_loss") == (0.0, np.inf)
    assert metric_bounds("val_score") == (-np.inf, np.inf)


def test_interval_stays_inside_the_metric_range_where_a_t_interval_does_not():
    seeds = [0.97, 0.99, 1.0]
    mean, lo, hi = mean_interval(seeds)
    assert mean == pytest.approx(np.mean(seeds))
    assert 0.97 <= lo < mean < hi <= 1.0
    t_high = np.mean(seeds) + stats.t.ppf(0.975, 2) * np.std(seeds, ddof=1) / np.sqrt(3)
    assert t_high > 1.0  # what the old interval did


def test_interval_is_reproducible_and_follows_params():
    values = np.array([0.5, 0.55, 0.62, 0.58, 0.49])
    assert mean_interval(values) == mean_interval(values)
    wide = mean_interval(values, Params(level=0.99))
    narrow = mean_interval(values, Params(level=0.5))
    assert wide[1] < narrow[1] < narrow[2] < wide[2]


def test_no_interval_below_the_minimum_seed_count():
    assert np.isnan(mean_interval([0.5, 0.6])[1:]).all()
    assert not np.isnan(mean_interval([0.5, 0.6], Params(min_seeds=2))[1])
    assert mean_interval([np.nan, 0.4])[0] == 0.4


@pytest.mark.parametrize("centre", [0.002, 0.5, 0.998])
def test_no_interval_ever_leaves_unit_range(centre):
    rng = np.random.default_rng(7)
    values = np.clip(centre + rng.normal(0, 0.05, (200, 3)), 0, 1)
    df = pd.DataFrame(
        {"cell": np.repeat(np.arange(200), 3), "seed": np.tile(range(3), 200), "v": values.ravel()}
    )
    table = interval_frame(df, ["cell"], "v")
    assert (table["ci_low"] >= 0).all() and (table["ci_high"] <= 1).all()
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    row = table.iloc[3]
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(mean_interval(values[3]))


def test_interval_frame_counts_and_spreads():
    df = pd.DataFrame({"a": [1, 1, 1, 2, 2], "v": [0.1, 0.2, 0.3, 0.5, 0.7]})
    table = interval_frame(df, ["a"], "v")
    assert list(table["n"]) == [3, 2]
    assert table["std"].tolist() == pytest.approx([0.1, np.std([0.5, 0.7], ddof=1)])
    assert np.isnan(table.loc[1, "ci_low"])


def test_seed_mean_intervals_average_over_other_factors_within_each_seed():
    final = pd.DataFrame(
        {
            "image_size": [64, 64, 64, 64, 128, 128],
            "batch_size": [4, 8, 4, 8, 4, 4],
            "seed": [0, 0, 1, 1, 0, 1],
            "final": [0.4, 0.6, 0.5, 0.7, 0.8, 0.9],
        }
    )
    table, seeds = seed_mean_intervals(final, ["image_size"])
    assert seeds.set_index(["image_size", "seed"])["value"].to_dict() == pytest.approx(
        {(64, 0): 0.5, (64, 1): 0.6, (128, 0): 0.8, (128, 1): 0.9}
    )
    assert table.set_index("image_size")["mean"].to_dict() == pytest.approx({64: 0.55, 128: 0.85})


def test_welch_p_matches_scipy_one_sided():
    rng = np.random.default_rng(3)
    best = rng.normal(0.8, 0.01, 4)
    other = rng.normal(0.79, 0.02, 3)
    p = welch_worse_p(
        np.array([other.mean()]), np.array([other.std(ddof=1)]), np.array([3]),
        best.mean(), best.std(ddof=1), 4,
    )  # fmt: skip
    expected = stats.ttest_ind(other, best, equal_var=False, alternative="less").pvalue
    assert p[0] == pytest.approx(expected)
    lower = welch_worse_p(np.array([0.2]), np.array([0.01]), np.array([3]), 0.1, 0.01, 3, False)
    assert lower[0] < 0.01  # a loss 0.1 above the best is worse


def test_welch_p_without_spread_or_seeds():
    p = welch_worse_p(np.array([0.7, 0.8, 0.7]), np.zeros(3), np.array([3, 3, 1]), 0.8, 0.0, 3)
    assert p[0] == 0.0 and p[1] == 1.0 and np.isnan(p[2])


def test_format_interval_rounds_to_what_the_interval_supports():
    assert format_interval(0.71234, 0.70111, 0.72399) == "0.712 [0.701, 0.724]"
    assert format_interval(0.71234, 0.6, 0.8) == "0.71 [0.60, 0.80]"
    assert format_interval(0.71234, np.nan, np.nan) == "0.712"
    assert format_interval(np.nan, np.nan, np.nan) == ""
