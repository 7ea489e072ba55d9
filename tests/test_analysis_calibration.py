"""Simulations: do the report's intervals cover and its p-values reject as often as they
say, with three seeds and with trials that share one training run?"""

from itertools import product

import numpy as np
import pandas as pd
import pytest
from statsmodels.formula.api import mixedlm

from analysis.anova import (
    _Design,
    _error_df,
    _Runs,
    _strata,
    _sums_of_squares,
    _tests,
    anova_table,
    choose_terms,
)
from analysis.load import varying_factors
from analysis.stats import interval_frame

CELLS, SEEDS = 240, 3


def _planted_cells(rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """``CELLS`` cells of ``SEEDS`` seeds: means across (0.05, 0.95), seed SD 0.01–0.05,
    values drawn from a beta distribution (they stay in [0, 1], skewed near the ends)."""
    mean = rng.uniform(0.05, 0.95, CELLS)
    sd = rng.uniform(0.01, 0.05, CELLS)
    nu = mean * (1 - mean) / sd**2 - 1
    values = rng.beta((mean * nu)[:, None], ((1 - mean) * nu)[:, None], (CELLS, SEEDS))
    df = pd.DataFrame({"cell": np.repeat(np.arange(CELLS), SEEDS), "v": values.ravel()})
    return df, mean


def _percentile_bootstrap(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The interval the report used to draw: 2,000 resampled means, 2.5 % and 97.5 %."""
    n = values.shape[1]
    draws = rng.integers(0, n, (2000, n))
    weights = np.zeros((2000, n))
    np.add.at(weights, (np.arange(2000)[:, None], draws), 1.0 / n)
    return np.quantile(values @ weights.T, [0.025, 0.975], axis=1)


def test_intervals_over_three_seeds_cover_planted_means_at_their_level():
    rng = np.random.default_rng(2024)
    df, mean = _planted_cells(rng)
    table = interval_frame(df, ["cell"], "v", bounds=(0.0, 1.0))
    covered = (table["ci_low"] <= mean) & (mean <= table["ci_high"])
    assert covered.mean() >= 0.90
    assert ((table["ci_low"] > 0) & (table["ci_high"] < 1)).all()
    # the percentile bootstrap returns about the seeds' range: three in four
    lo, hi = _percentile_bootstrap(df["v"].to_numpy().reshape(CELLS, SEEDS), rng)
    old = ((lo <= mean) & (mean <= hi)).mean()
    assert 0.65 < old < 0.82


def _shared_study(
    rng: np.random.Generator, studies: int, run_sd: float = 0.05, noise: float = 0.01
) -> tuple[pd.DataFrame, np.ndarray]:
    """A grid of image_size × batch_size × 3 seeds, each training run read at 8 and 16
    epochs: ``studies`` response columns. batch_size is null; image_size and epochs are
    real; the run's random effect (SD ``run_sd``) dwarfs the noise within a run."""
    rows = [
        {"image_size": i, "batch_size": b, "epochs": e, "seed": s,
         "training_run": f"img{i}_bs{b}_ep16_s{s}"}
        for i, b, s, e in product((64, 128), (4, 8), range(3), (8, 16))
    ]  # fmt: skip
    df = pd.DataFrame(rows)
    run = pd.factorize(df["training_run"])[0]
    fixed = 0.5 + 0.08 * (df["image_size"] == 128) + 0.03 * (df["epochs"] == 16)
    run_effect = rng.normal(0, run_sd, (run.max() + 1, studies))[run]
    ys = fixed.to_numpy()[:, None] + run_effect + rng.normal(0, noise, (len(df), studies))
    return df, ys


def _p_values(df: pd.DataFrame, ys: np.ndarray, shared: bool) -> pd.DataFrame:
    """anova_table's p-values for every response column at once (rows: terms)."""
    table = df if shared else df.drop(columns="training_run")
    factors = varying_factors(table)
    design, runs = _Design.of(table, factors), _Runs.of(table, factors)
    terms = choose_terms(table.assign(final=0.0), "final", factors)
    dfs = np.array([design.df(t) for t in terms], dtype=float)
    sums = _sums_of_squares(design, terms, ys, runs)
    tests = _tests(sums, dfs, _strata(terms, runs), _error_df(design, terms, runs), len(ys))
    return pd.DataFrame(tests.p, index=[":".join(t) for t in terms])


def test_null_between_run_factor_is_calibrated_over_shared_runs():
    rng = np.random.default_rng(11)
    df, ys = _shared_study(rng, 500)
    split = _p_values(df, ys, shared=True)
    naive = _p_values(df, ys, shared=False)
    for column in range(3):  # the vectorised p-values are anova_table's
        for shared, p in ((True, split), (False, naive)):
            one = df.assign(final=ys[:, column])
            table = anova_table(one if shared else one.drop(columns="training_run"))
            assert table.set_index("term")["p_value"].dropna().to_numpy() == pytest.approx(
                p[column].to_numpy(), rel=1e-9
            )
    false_positive = (split.loc["batch_size"] < 0.05).mean()
    assert 0.02 <= false_positive <= 0.09
    # rows of one run counted as independent: the null factor "matters" three times as often
    naive_rate = (naive.loc["batch_size"] < 0.05).mean()
    assert naive_rate >= 0.12 and naive_rate >= 2.5 * false_positive
    # the real factors are found, epochs within runs against the small within-run noise
    assert (split.loc["epochs"] < 0.05).mean() > 0.99
    assert (split.loc["image_size"] < 0.05).mean() > 0.5


def test_seeded_study_where_counting_rows_as_independent_finds_a_null_factor():
    df, ys = _shared_study(np.random.default_rng(11), 500)
    naive = _p_values(df, ys, shared=False).loc["batch_size"]
    split = _p_values(df, ys, shared=True).loc["batch_size"]
    column = int(np.flatnonzero((naive < 0.01) & (split > 0.05))[0])
    study = df.assign(final=ys[:, column])
    table = anova_table(study).set_index("term")
    rows = anova_table(study.drop(columns="training_run")).set_index("term")
    assert rows.loc["batch_size", "p_value"] < 0.01
    assert table.loc["batch_size", "p_value"] > 0.05
    assert table.loc["batch_size", "stratum"] == "between runs"
    assert table.loc["epochs", "stratum"] == "within runs"
    assert table.loc["epochs", "p_value"] < 0.001
    # the split plot's between-run error has one value per run: 12 runs − 1 − 3 terms
    assert table.loc["Residual (between runs)", "df"] == 8
    assert table.loc["Residual (within runs)", "df"] == 24 - 12 - 4
    assert rows.loc["Residual", "df"] == 16


@pytest.mark.filterwarnings("ignore:The MLE may be on the boundary")
def test_error_strata_estimate_the_variances_of_a_mixed_model():
    # statsmodels' MixedLM with the training run as a random effect, same fixed effects:
    # in a balanced split plot its REML variances are the strata's mean squares'
    df, ys = _shared_study(np.random.default_rng(5), 1, run_sd=0.03)
    study = df.assign(final=ys[:, 0])
    table = anova_table(study).set_index("term")
    ms = table["sum_sq"] / table["df"]
    within = ms["Residual (within runs)"]
    run = (ms["Residual (between runs)"] - within) / 2  # two trials per run
    fit = mixedlm(
        "final ~ C(image_size) * C(batch_size) * C(epochs)", study, groups=study["training_run"]
    ).fit(reml=True)
    assert fit.scale == pytest.approx(within, rel=1e-3)
    assert float(fit.cov_re.iloc[0, 0]) == pytest.approx(run, rel=1e-3)
