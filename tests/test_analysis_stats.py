import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.params import Params
from analysis.stats import (
    detectable_difference,
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


UNIT = (0.0, 1.0)


def test_t_interval_on_the_logit_scale_stays_inside_the_unit_range():
    seeds = np.array([0.97, 0.99, 1.0])
    mean, lo, hi = mean_interval(seeds, bounds=UNIT)
    assert mean == pytest.approx(seeds.mean())  # the point is the arithmetic mean
    z = np.log(np.clip(seeds, 1e-3, 1 - 1e-3) / (1 - np.clip(seeds, 1e-3, 1 - 1e-3)))
    half = stats.t.ppf(0.975, 2) * z.std(ddof=1) / np.sqrt(3)
    expit = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    assert (lo, hi) == pytest.approx((expit(z.mean() - half), expit(z.mean() + half)))
    assert 0.0 < lo < 0.97 and 1.0 > hi > 0.9999  # wider than the seeds, inside (0, 1)
    plain_t_high = seeds.mean() + stats.t.ppf(0.975, 2) * seeds.std(ddof=1) / np.sqrt(3)
    assert plain_t_high > 1.0  # what a t interval on the raw values would claim


def test_t_interval_is_as_wide_as_three_seeds_warrant():
    # the best quick cell: a bootstrap gave about the seed range [0.568, 0.612]
    mean, lo, hi = mean_interval([0.5676, 0.6125, 0.6067], bounds=UNIT)
    assert mean == pytest.approx(0.5956)
    assert (lo, hi) == pytest.approx((0.534, 0.654), abs=5e-4)


def test_interval_scale_follows_the_bounds():
    losses = np.array([1.2, 1.5, 1.1])
    _, lo, hi = mean_interval(losses, bounds=(0.0, np.inf))
    logs = np.log(losses)
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
    assert (lo, hi) == pytest.approx(np.exp([logs.mean() - half, logs.mean() + half]))
    scores = np.array([-1.0, 0.5, 2.0])
    _, lo, hi = mean_interval(scores, bounds=(-np.inf, np.inf))
    half = stats.t.ppf(0.975, 2) * scores.std(ddof=1) / np.sqrt(3)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    _, lo, hi = mean_interval(-losses, bounds=(-np.inf, 0.0))
    assert (lo, hi) == pytest.approx((-np.exp(logs.mean() + half_log(logs)),
                                      -np.exp(logs.mean() - half_log(logs))))  # fmt: skip


def half_log(logs: np.ndarray) -> float:
    return stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))


def test_tied_seeds_at_zero_give_an_interval_holding_the_mean():
    mean, lo, hi = mean_interval([0.0, 0.0, 0.0], bounds=UNIT)
    assert mean == 0.0 and lo == 0.0 and hi == pytest.approx(1e-3)


def test_interval_follows_params_level():
    values = np.array([0.5, 0.55, 0.62, 0.58, 0.49])
    wide = mean_interval(values, Params(level=0.99), bounds=UNIT)
    narrow = mean_interval(values, Params(level=0.5), bounds=UNIT)
    assert wide[1] < narrow[1] < narrow[2] < wide[2]


def test_no_interval_below_the_minimum_seed_count():
    assert np.isnan(mean_interval([0.5, 0.6], bounds=UNIT)[1:]).all()
    assert not np.isnan(mean_interval([0.5, 0.6], Params(min_seeds=2), bounds=UNIT)[1])
    assert mean_interval([np.nan, 0.4], bounds=UNIT)[0] == 0.4


@pytest.mark.parametrize("centre", [0.002, 0.5, 0.998])
def test_no_interval_ever_leaves_unit_range(centre):
    rng = np.random.default_rng(7)
    values = np.clip(centre + rng.normal(0, 0.05, (200, 3)), 0, 1)
    df = pd.DataFrame(
        {"cell": np.repeat(np.arange(200), 3), "seed": np.tile(range(3), 200), "v": values.ravel()}
    )
    table = interval_frame(df, ["cell"], "v", bounds=UNIT)
    assert (table["ci_low"] >= 0).all() and (table["ci_high"] <= 1).all()
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    row = table.iloc[3]
    expected = mean_interval(values[3], bounds=UNIT)
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(expected)


def test_interval_frame_counts_and_spreads():
    df = pd.DataFrame({"a": [1, 1, 1, 2, 2], "v": [0.1, 0.2, 0.3, 0.5, 0.7]})
    table = interval_frame(df, ["a"], "v", bounds=UNIT)
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
    table, seeds = seed_mean_intervals(final, ["image_size"], bounds=UNIT)
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


def _hand_detectable(sd: float, n: int, alpha: float, power: float) -> float:
    """Bisection on the power of a two-sided two-sample t test, from the noncentral t."""
    dof, se = 2 * (n - 1), sd * np.sqrt(2 / n)
    crit = stats.t.ppf(1 - alpha / 2, dof)
    lo, hi = 0.0, 20 * se
    for _ in range(200):
        mid = (lo + hi) / 2
        reached = stats.nct.sf(crit, dof, mid / se) + stats.nct.cdf(-crit, dof, mid / se)
        lo, hi = (mid, hi) if reached < power else (lo, mid)
    return (lo + hi) / 2


def test_detectable_difference_matches_a_hand_computation():
    final = pd.DataFrame(
        {
            "cell_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"],
            "final": [0.50, 0.52, 0.57, 0.60, 0.61, 0.65, 0.70, 0.74, 0.9],
        }
    )
    found = detectable_difference(final, UNIT, Params(alpha=0.05, power=0.8))
    ss = sum(((v - np.mean(v)) ** 2).sum() for v in (
        np.array([0.50, 0.52, 0.57]), np.array([0.60, 0.61, 0.65]), np.array([0.70, 0.74])
    ))  # fmt: skip
    sd = np.sqrt(ss / 5)
    assert found.df == 5 and found.seeds == 3
    assert found.pooled_sd == pytest.approx(sd)
    assert found.difference == pytest.approx(_hand_detectable(sd, 3, 0.05, 0.8), rel=1e-6)
    # about 3.1 seed SDs with 3 seeds per cell: the normal approximation (2.80 · √(2/3) ≈
    # 2.3 SDs) ignores how little a test on 4 df knows about the spread
    assert 3.0 < found.difference / sd < 3.15
    assert "cannot be told apart" in found.sentence("val_iou")
    stricter = detectable_difference(final, UNIT, Params(alpha=0.01, power=0.9))
    assert stricter.difference > found.difference


def test_detectable_difference_without_replicates_or_spread():
    one_seed = pd.DataFrame({"cell_id": ["a", "b"], "final": [0.5, 0.6]})
    assert np.isnan(detectable_difference(one_seed, UNIT).difference)
    flat = pd.DataFrame({"cell_id": ["a"] * 3 + ["b"] * 3, "final": [0.5] * 3 + [0.6] * 3})
    assert detectable_difference(flat, UNIT).difference == 0.0
    noisy = pd.DataFrame({"cell_id": ["a"] * 3, "final": [0.0, 1.0, 0.5]})
    assert detectable_difference(noisy, UNIT).difference == 1.0  # no larger than the range
