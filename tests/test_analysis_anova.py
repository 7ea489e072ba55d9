from itertools import product

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm

from analysis.anova import (
    _Design,
    _resample_runs,
    _resampling_groups,
    _Runs,
    anova_table,
    choose_terms,
    omega_sq_bootstrap,
)
from analysis.params import Params
from analysis.synthetic import synthetic_tables


def _design(seeds: int, rng_seed: int = 0, noise: float = 0.02) -> pd.DataFrame:
    """image_size × batch_size interact; epochs is a null factor; dataset_size has one level."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for image, batch, epochs, seed in product((64, 128, 256), (8, 16), (10, 20), range(seeds)):
        y = 0.5 + 0.05 * (image > 64) + 0.08 * (image == 256) * (batch == 16)
        rows.append(
            {
                "image_size": image,
                "dataset_size": 100,
                "epochs": epochs,
                "batch_size": batch,
                "seed": seed,
                "final": y + rng.normal(0, noise),
            }
        )
    return pd.DataFrame(rows)


def _assert_matches_statsmodels(df: pd.DataFrame) -> pd.DataFrame:
    table = anova_table(df)
    direct = anova_lm(ols(table.attrs["formula"], df).fit(), typ=2)
    assert list(table["term"]) == [t.replace("C(", "").replace(")", "") for t in direct.index]
    np.testing.assert_allclose(table["sum_sq"], direct["sum_sq"], rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(table["df"], direct["df"])
    np.testing.assert_allclose(table["F"].iloc[:-1], direct["F"].iloc[:-1], rtol=1e-9)
    np.testing.assert_allclose(
        table["p_value"].iloc[:-1], direct["PR(>F)"].iloc[:-1], rtol=1e-7, atol=1e-15
    )
    ss_res, df_res = direct.loc["Residual", "sum_sq"], direct.loc["Residual", "df"]
    ss_total = ((df["final"] - df["final"].mean()) ** 2).sum()
    effects = direct.iloc[:-1]
    np.testing.assert_allclose(
        table["partial_eta_sq"].iloc[:-1], effects["sum_sq"] / (effects["sum_sq"] + ss_res)
    )
    omega = (effects["sum_sq"] - effects["df"] * ss_res / df_res) / (ss_total + ss_res / df_res)
    np.testing.assert_allclose(table["omega_sq"].iloc[:-1], omega, atol=1e-12)
    assert np.isnan(table["partial_eta_sq"].iloc[-1])
    return table


@pytest.mark.parametrize("rng_seed", range(3))
def test_planted_interaction_is_found_and_null_factor_is_not(rng_seed):
    table = anova_table(_design(seeds=3, rng_seed=rng_seed)).set_index("term")
    assert table.loc["image_size:batch_size", "p_value"] < 0.01
    assert table.loc["image_size", "p_value"] < 0.01
    assert table.loc["epochs", "p_value"] > 0.01
    assert table.loc["image_size:batch_size", "partial_eta_sq"] > 0.3
    assert "dataset_size" not in table.index


def test_balanced_grid_matches_statsmodels():
    table = _assert_matches_statsmodels(_design(seeds=3))
    assert table.attrs["formula"] == (
        "final ~ C(image_size) + C(epochs) + C(batch_size) + C(image_size):C(epochs)"
        " + C(image_size):C(batch_size) + C(epochs):C(batch_size)"
        " + C(image_size):C(epochs):C(batch_size)"
    )


def test_unbalanced_grid_matches_statsmodels():
    # two trials failed: the cells hold 2 or 3 seeds
    _assert_matches_statsmodels(_design(seeds=3).drop(index=[0, 7]))


def test_incomplete_grid_drops_inestimable_interactions_and_matches_statsmodels():
    df = _design(seeds=2)
    # an infeasible corner: no large images with large batches
    df = df[~((df["image_size"] == 256) & (df["batch_size"] == 16))]
    table = _assert_matches_statsmodels(df)
    # with a cell missing, the treatment-coded image_size:batch_size loses rank
    assert table["term"].tolist() == [
        "image_size", "epochs", "batch_size", "image_size:epochs", "epochs:batch_size", "Residual"
    ]  # fmt: skip
    assert table.attrs["pooled"] == ["image_size:batch_size", "image_size:epochs:batch_size"]


def test_unreplicated_design_pools_higher_orders_into_error():
    table = anova_table(_design(seeds=1))
    assert "image_size:batch_size" in table["term"].tolist()
    assert table.attrs["pooled"] == ["image_size:epochs:batch_size"]
    assert table.set_index("term").loc["Residual", "df"] == 2


def test_unreplicated_two_factor_design_keeps_main_effects_only():
    df = _design(seeds=1)
    df = df[df["epochs"] == 10]
    assert choose_terms(df, "final", ["image_size", "batch_size"]) == [
        ("image_size",),
        ("batch_size",),
    ]


def test_no_varying_factor_gives_empty_table():
    df = _design(seeds=3)
    df = df[(df["image_size"] == 64) & (df["batch_size"] == 8) & (df["epochs"] == 10)]
    assert anova_table(df).empty


@pytest.mark.parametrize("drop", [[], [0, 7]])
def test_omega_sq_intervals_bracket_the_estimate_and_are_reproducible(drop):
    df = _design(seeds=4).drop(index=drop)
    anova = anova_table(df)
    boot = omega_sq_bootstrap(df, anova)
    assert boot["omega_sq"].is_monotonic_decreasing
    assert boot.loc[0, "term"] == "image_size"
    point = anova.set_index("term")["omega_sq"]
    assert boot.set_index("term")["omega_sq"].to_dict() == pytest.approx(point.dropna().to_dict())
    # bias-corrected: every interval brackets its estimate, null terms' included
    assert (boot["ci_low"] < boot["omega_sq"]).all()
    assert (boot["omega_sq"] < boot["ci_high"]).all()
    strong = boot[boot["ci_low"] > 0.05]
    assert strong["term"].tolist() == ["image_size", "image_size:batch_size"]
    pd.testing.assert_frame_equal(boot, omega_sq_bootstrap(df, anova))
    other = omega_sq_bootstrap(df, anova, params=Params(rng_seed=1))
    assert not np.allclose(other["ci_low"], boot["ci_low"])


def test_one_seed_gives_omega_sq_without_interval():
    df = _design(seeds=1)
    boot = omega_sq_bootstrap(df, anova_table(df))
    assert len(boot) == 6
    assert boot["ci_low"].isna().all()


def _shared(rng_seed: int = 0, drop: tuple[int, ...] = ()) -> pd.DataFrame:
    """image_size × dataset_size × 3 seeds, each training run read at 8 and 16 epochs."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for image, data, seed in product((64, 128), (50, 100), range(3)):
        run_effect = rng.normal(0, 0.04)
        for epochs in (8, 16):
            y = 0.5 + 0.05 * (image == 128) + 0.02 * (epochs == 16) + run_effect
            rows.append(
                {"image_size": image, "dataset_size": data, "epochs": epochs, "batch_size": 4,
                 "seed": seed, "training_run": f"img{image}_n{data}_ep16_s{seed}",
                 "final": y + rng.normal(0, 0.01)}
            )  # fmt: skip
    return pd.DataFrame(rows).drop(index=list(drop)).reset_index(drop=True)


@pytest.mark.parametrize("drop", [(), (3,)])
def test_shared_runs_split_the_residual_into_strata(drop):
    df = _shared(drop=drop)
    table = anova_table(df).set_index("term")
    assert table["stratum"].to_dict() == {
        "image_size": "between runs", "dataset_size": "between runs", "epochs": "within runs",
        "image_size:dataset_size": "between runs", "image_size:epochs": "within runs",
        "dataset_size:epochs": "within runs", "image_size:dataset_size:epochs": "within runs",
        "Residual (between runs)": "between runs", "Residual (within runs)": "within runs",
    }  # fmt: skip
    # Type II term SS as an ordinary ANOVA; its residual split by run means of residuals
    direct = ols(anova_table(df.drop(columns="training_run")).attrs["formula"], df).fit()
    effects = anova_lm(direct, typ=2).iloc[:-1]
    np.testing.assert_allclose(table["sum_sq"].iloc[:7], effects["sum_sq"], rtol=1e-9)
    resid = pd.Series(direct.resid.to_numpy()).groupby(df["training_run"])
    whole = (resid.size() * resid.mean() ** 2).sum()
    n, runs = len(df), df["training_run"].nunique()
    assert table.loc["Residual (between runs)", "sum_sq"] == pytest.approx(whole, rel=1e-9)
    assert table.loc["Residual (within runs)", "sum_sq"] == pytest.approx(
        direct.ssr - whole, rel=1e-9
    )
    assert table.loc["Residual (between runs)", "df"] == runs - 1 - 3
    assert table.loc["Residual (within runs)", "df"] == n - runs - 4
    ms = table["sum_sq"] / table["df"]
    for term, error in (("image_size", "between runs"), ("epochs", "within runs")):
        assert table.loc[term, "F"] == pytest.approx(ms[term] / ms[f"Residual ({error})"])
        assert table.loc[term, "p_value"] == pytest.approx(
            stats.f.sf(table.loc[term, "F"], 1, table.loc[f"Residual ({error})", "df"])
        )
    assert table.attrs["runs"] == runs
    assert table.attrs["strata"]["within runs"][0] == "epochs"
    assert "one value per training run" in table.attrs["unit"]
    assert f"{n} trials from {runs} runs" in table.attrs["unit"]


def test_between_run_tests_equal_an_anova_of_run_means():
    df = _shared()
    table = anova_table(df).set_index("term")
    means = df.groupby(["training_run", "image_size", "dataset_size"], as_index=False)["final"]
    on_runs = anova_table(means.mean().drop(columns="training_run")).set_index("term")
    for term in ("image_size", "dataset_size", "image_size:dataset_size"):
        assert table.loc[term, "F"] == pytest.approx(on_runs.loc[term, "F"], rel=1e-9)
        assert table.loc[term, "p_value"] == pytest.approx(on_runs.loc[term, "p_value"])


def test_omega_sq_over_strata_uses_each_terms_error_and_the_run_variance():
    df = _shared()
    table = anova_table(df).set_index("term")
    ms = table["sum_sq"] / table["df"]
    ms_b, ms_w = ms["Residual (between runs)"], ms["Residual (within runs)"]
    effects = table.iloc[:-2]
    errors = effects["stratum"].map({"between runs": ms_b, "within runs": ms_w})
    n, ss_total = len(df), ((df["final"] - df["final"].mean()) ** 2).sum()
    components = (effects["sum_sq"] - effects["df"] * errors) / n
    model = ss_total - table["sum_sq"].iloc[-2:].sum()
    total = (model - (effects["df"] * errors).sum()) / n + ms_w + max((ms_b - ms_w) / 2, 0)
    np.testing.assert_allclose(effects["omega_sq"], components / total, rtol=1e-9)
    assert effects["sum_sq"].sum() == pytest.approx(model)  # orthogonal: Σ SS_T = SS_model


def test_without_shared_runs_every_trial_is_an_observation():
    df = _design(seeds=3).assign(training_run=lambda d: [f"r{i}" for i in range(len(d))])
    table = anova_table(df)
    plain = anova_table(df.drop(columns="training_run"))
    pd.testing.assert_frame_equal(table, plain)
    assert table["term"].iloc[-1] == "Residual"
    assert set(table["stratum"]) == {"between runs"}
    assert table.attrs["unit"] == (
        "Every trial is its own training run, so the ANOVA counts each of the 36 trials as "
        "one observation (error df 24)."
    )


def test_bootstrap_resamples_whole_training_runs():
    df = _shared()
    anova = anova_table(df)
    boot = omega_sq_bootstrap(df, anova)
    assert boot.loc[0, "term"] == "image_size"
    assert (boot["ci_low"] < boot["omega_sq"]).all() and (boot["omega_sq"] < boot["ci_high"]).all()
    # a resampled run keeps its two epochs together: undo the √(m/(m−1)) scaling and each
    # resampled run's pair of values is one original run's pair
    factors = ["image_size", "dataset_size", "epochs"]
    design, runs = _Design.of(df, factors), _Runs.of(df, factors)
    groups = _resampling_groups(design, runs)
    assert [g.shape for g in groups] == [(3, 2)] * 4
    y = df["final"].to_numpy()
    ys = _resample_runs(y, groups, 50, np.random.default_rng(0))
    for g in groups:
        mean = y[g].mean(axis=0)
        source = mean[None, :, None] + (ys[g] - mean[None, :, None]) / np.sqrt(3 / 2)
        pairs = {tuple(np.round(p, 12)) for p in y[g]}
        drawn = {tuple(np.round(source[r, :, b], 12)) for r in range(3) for b in range(50)}
        assert drawn <= pairs


def _five_factor(rng_seed: int, effects: dict, epochs=(10, 20)) -> pd.DataFrame:
    """A synthetic study's ok trials with train.lr as a fifth factor (as analysis.load
    gives them: `final` and the training run of each trial)."""
    trials, _ = synthetic_tables(
        image_sizes=(64, 128), dataset_sizes=(100, 400), epochs=epochs, batch_sizes=(8, 16),
        seeds=3, noise=0.004, rng_seed=rng_seed, extra={"train.lr": (3e-4, 1e-3)},
        effects=effects,
    )  # fmt: skip
    return trials.assign(final=trials["final_val_iou"])


FIVE = ("image_size", "dataset_size", "epochs", "batch_size", "train.lr")


def test_five_factor_anova_lists_lr_and_recovers_its_interaction_with_batch_size():
    final = _five_factor(0, {"train.lr": (0.03, 0.04)})
    table = anova_table(final, "final", FIVE).set_index("term")
    assert table.loc["train.lr", "p_value"] < 1e-6
    assert table.loc["batch_size:train.lr", "p_value"] < 1e-6
    assert table.loc["batch_size:train.lr", "stratum"] == "between runs"
    # planted: +0.04 at the larger batch and lr only, an interaction effect of ±0.04 / 4
    # in each of the 96 trials (16 cells × 2 epochs × 3 seeds)
    assert table.loc["batch_size:train.lr", "sum_sq"] == pytest.approx(
        96 * (0.04 / 4) ** 2, rel=0.25
    )
    assert table.loc["image_size:train.lr", "p_value"] > 0.01
    importance = omega_sq_bootstrap(final, anova_table(final, "final", FIVE), "final")
    omega = importance.set_index("term")
    assert omega.loc["train.lr", "omega_sq"] > omega.loc["batch_size:train.lr", "omega_sq"] > 0.005
    assert omega.loc["batch_size:train.lr", "ci_low"] > 0
    # without the factors named, the setting is not analysed
    assert "train.lr" not in set(anova_table(final)["term"])


def test_a_dotted_factor_name_is_quoted_in_a_formula_statsmodels_reads():
    final = _five_factor(1, {"train.lr": (0.03, 0.04)}, epochs=(20,))
    table = anova_table(final, "final", FIVE)
    assert "C(Q('train.lr'))" in table.attrs["formula"]
    direct = anova_lm(ols(table.attrs["formula"], final).fit(), typ=2)
    np.testing.assert_allclose(table["sum_sq"], direct["sum_sq"], rtol=1e-9, atol=1e-15)


def test_a_null_setting_is_called_significant_about_as_often_as_alpha():
    hits = [
        anova_table(_five_factor(seed, {}), "final", FIVE).set_index("term").loc[
            "train.lr", "p_value"
        ] < 0.05
        for seed in range(60)
    ]
    # binomial(60, 0.05): 8 or more has probability ~0.01
    assert sum(hits) <= 7


def test_text_levels_are_categories():
    df = _design(seeds=3)
    df["model.encoder"] = np.where(df["seed"] == 0, "resnet18", "resnet34")
    df["final"] += 0.1 * (df["model.encoder"] == "resnet34")
    table = anova_table(df, "final", (*FIVE[:4], "model.encoder")).set_index("term")
    assert table.loc["model.encoder", "df"] == 1
    assert table.loc["model.encoder", "p_value"] < 1e-6
