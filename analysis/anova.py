"""Factorial ANOVA of the final metric: OLS with categorical factors, Type II sums.

How the interaction order is chosen: the cap is every order (up to all the
varying factors) when each observed cell has at least two replicates (seeds),
else two-way. Terms are added by increasing order; a term is kept only if the
design stays full rank with residual df > 0, so interactions that an
incomplete grid (infeasible cells) cannot estimate, or that would leave no
error, are pooled into the residual instead. Unreplicated grids thus get main
effects and two-way interactions with the higher orders as error.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm

from analysis.load import varying_factors

__all__ = ["AnovaResult", "anova_formula", "anova_table", "choose_terms"]

ANOVA_COLUMNS: list[str] = ["term", "df", "sum_sq", "F", "p_value", "partial_eta_sq", "omega_sq"]


@dataclass(frozen=True)
class AnovaResult:
    """The ANOVA table, the formula fitted, and the terms pooled into the residual."""

    table: pd.DataFrame
    formula: str
    pooled: list[str]


def _term(factors: tuple[str, ...]) -> str:
    return ":".join(f"C({f})" for f in factors)


def anova_formula(response: str, terms: list[tuple[str, ...]]) -> str:
    """``response ~ C(a) + C(b) + C(a):C(b)`` for the given factor tuples."""
    return f"{response} ~ " + " + ".join(_term(t) for t in terms)


def _estimable(df: pd.DataFrame, response: str, terms: list[tuple[str, ...]]) -> bool:
    exog = ols(anova_formula(response, terms), df).exog
    return np.linalg.matrix_rank(exog) == exog.shape[1] < exog.shape[0]


def choose_terms(df: pd.DataFrame, response: str, factors: list[str]) -> list[tuple[str, ...]]:
    """Main effects plus the interactions the data can estimate (see module doc)."""
    replicated = bool(df.groupby(factors).size().min() >= 2)
    cap = len(factors) if replicated else min(2, len(factors))
    terms: list[tuple[str, ...]] = [(f,) for f in factors]
    for order in range(2, cap + 1):
        for combo in combinations(factors, order):
            if _estimable(df, response, [*terms, combo]):
                terms.append(combo)
    return terms


def anova_table(df: pd.DataFrame, response: str = "final") -> AnovaResult:
    """Type II ANOVA of ``response`` on the factors that vary in ``df``.

    Returns columns ``term, df, sum_sq, F, p_value, partial_eta_sq, omega_sq``,
    with ``term`` a factor or factors joined by ``:``, and a ``Residual`` row.
    partial η² = SS / (SS + SS_res); ω² = (SS − df·MS_res) / (SS_total + MS_res).
    Empty when no factor varies or there are too few observations.
    """
    df = df.dropna(subset=[response])
    factors = varying_factors(df)
    empty = AnovaResult(pd.DataFrame(columns=ANOVA_COLUMNS), "", [])
    if not factors or not _estimable(df, response, [(f,) for f in factors]):
        return empty
    terms = choose_terms(df, response, factors)
    formula = anova_formula(response, terms)
    raw = anova_lm(ols(formula, df).fit(), typ=2)

    ss_res = float(raw.loc["Residual", "sum_sq"])
    ms_res = ss_res / float(raw.loc["Residual", "df"])
    ss_total = float(((df[response] - df[response].mean()) ** 2).sum())
    table = pd.DataFrame(
        {
            "term": [t.replace("C(", "").replace(")", "") for t in raw.index],
            "df": raw["df"].to_numpy(),
            "sum_sq": raw["sum_sq"].to_numpy(),
            "F": raw["F"].to_numpy(),
            "p_value": raw["PR(>F)"].to_numpy(),
        }
    )
    effect = table["term"] != "Residual"
    table["partial_eta_sq"] = np.where(effect, table["sum_sq"] / (table["sum_sq"] + ss_res), np.nan)
    omega = (table["sum_sq"] - table["df"] * ms_res) / (ss_total + ms_res)
    table["omega_sq"] = np.where(effect, omega, np.nan)

    kept = set(terms)
    pooled = [
        ":".join(c)
        for order in range(2, len(factors) + 1)
        for c in combinations(factors, order)
        if c not in kept
    ]
    return AnovaResult(table, formula, pooled)
