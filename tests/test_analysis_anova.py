from itertools import product

import numpy as np
import pandas as pd
import pytest
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm

from analysis.anova import anova_table, choose_terms


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


@pytest.mark.parametrize("rng_seed", range(3))
def test_planted_interaction_is_found_and_null_factor_is_not(rng_seed):
    table = anova_table(_design(seeds=3, rng_seed=rng_seed)).table.set_index("term")
    assert table.loc["image_size:batch_size", "p_value"] < 0.01
    assert table.loc["image_size", "p_value"] < 0.01
    assert table.loc["epochs", "p_value"] > 0.01
    assert table.loc["image_size:batch_size", "partial_eta_sq"] > 0.3
    assert "dataset_size" not in table.index


def test_anova_matches_direct_statsmodels_fit_exactly():
    df = _design(seeds=3)
    result = anova_table(df)
    formula = (
        "final ~ C(image_size) + C(epochs) + C(batch_size) + C(image_size):C(epochs)"
        " + C(image_size):C(batch_size) + C(epochs):C(batch_size)"
        " + C(image_size):C(epochs):C(batch_size)"
    )
    assert result.formula == formula
    direct = anova_lm(ols(formula, df).fit(), typ=2)
    table = result.table
    assert list(table["term"]) == [t.replace("C(", "").replace(")", "") for t in direct.index]
    np.testing.assert_array_equal(table["sum_sq"], direct["sum_sq"])
    np.testing.assert_array_equal(table["df"], direct["df"])
    np.testing.assert_array_equal(table["F"].iloc[:-1], direct["F"].iloc[:-1])
    np.testing.assert_array_equal(table["p_value"].iloc[:-1], direct["PR(>F)"].iloc[:-1])
    ss_res, df_res = direct.loc["Residual", "sum_sq"], direct.loc["Residual", "df"]
    ss_total = ((df["final"] - df["final"].mean()) ** 2).sum()
    effects = direct.iloc[:-1]
    np.testing.assert_allclose(
        table["partial_eta_sq"].iloc[:-1],
        effects["sum_sq"] / (effects["sum_sq"] + ss_res),
        rtol=1e-12,
    )
    omega = (effects["sum_sq"] - effects["df"] * ss_res / df_res) / (ss_total + ss_res / df_res)
    np.testing.assert_allclose(table["omega_sq"].iloc[:-1], omega, rtol=1e-12)
    assert np.isnan(table["partial_eta_sq"].iloc[-1])


def test_unreplicated_design_pools_higher_orders_into_error():
    result = anova_table(_design(seeds=1))
    terms = list(result.table["term"])
    assert "image_size:batch_size" in terms
    assert "image_size:epochs:batch_size" not in terms
    assert result.pooled == ["image_size:epochs:batch_size"]
    assert result.table.set_index("term").loc["Residual", "df"] == 2


def test_unreplicated_two_factor_design_keeps_main_effects_only():
    df = _design(seeds=1)
    df = df[df["epochs"] == 10]
    assert choose_terms(df, "final", ["image_size", "batch_size"]) == [
        ("image_size",),
        ("batch_size",),
    ]


def test_incomplete_grid_drops_inestimable_interactions():
    df = _design(seeds=2)
    # an infeasible corner: no large images with large batches
    df = df[~((df["image_size"] == 256) & (df["batch_size"] == 16))]
    terms = list(anova_table(df).table["term"])
    assert "image_size" in terms and "batch_size" in terms
    assert terms[-1] == "Residual"


def test_no_varying_factor_gives_empty_table():
    df = _design(seeds=3)
    df = df[(df["image_size"] == 64) & (df["batch_size"] == 8) & (df["epochs"] == 10)]
    assert anova_table(df).table.empty
