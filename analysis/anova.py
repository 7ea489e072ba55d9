"""Factorial ANOVA of the final metric: categorical factors, Type II sums of squares,
and bootstrap intervals of each term's ω² over seeds.

How the interaction order is chosen: the cap is every order (up to all the varying
factors) when each observed cell has at least two replicates (seeds), else two-way.
Terms are added by increasing order; a term is kept only if the design stays full rank
with residual df > 0, so interactions that an incomplete grid (infeasible cells) cannot
estimate, or that would leave no error, are pooled into the residual instead.
Unreplicated grids thus get main effects and two-way interactions with the higher
orders as error.

Sums of squares: Type II, SS(T) = RSS(terms not containing T) − RSS(those + T). A
complete grid with equal seeds per cell is orthogonal, and then SS(T) is read off the
cell means by inclusion–exclusion of marginal means, which costs nothing even for a
thousand cells; other grids are fitted by least squares (QR) on treatment-coded
dummies. Both agree with ``statsmodels``' ``anova_lm(typ=2)`` (the tests check it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import varying_factors
from analysis.params import DEFAULT_PARAMS, Params

__all__ = ["anova_formula", "anova_table", "choose_terms", "omega_sq_bootstrap"]

ANOVA_COLUMNS: list[str] = ["term", "df", "sum_sq", "F", "p_value", "partial_eta_sq", "omega_sq"]
Term = tuple[str, ...]


@dataclass(frozen=True)
class _Design:
    """Rows coded by factor level; ``cells`` indexes the full factorial of the levels."""

    factors: list[str]
    shape: tuple[int, ...]
    codes: np.ndarray
    cells: np.ndarray

    @classmethod
    def of(cls, df: pd.DataFrame, factors: list[str]) -> _Design:
        codes = np.stack([pd.factorize(df[f], sort=True)[0] for f in factors], axis=1)
        shape = tuple(int(df[f].nunique()) for f in factors)
        return cls(factors, shape, codes, np.ravel_multi_index(codes.T, shape))

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.cells, minlength=math.prod(self.shape))

    @property
    def complete(self) -> bool:
        return bool((self.counts > 0).all())

    @property
    def balanced(self) -> bool:
        counts = self.counts
        return bool(counts.min() == counts.max() > 0)

    def block(self, term: Term) -> np.ndarray:
        """Treatment-coded columns of ``term``: products of its factors' dummies."""
        out = np.ones((len(self.codes), 1))
        for f in term:
            i = self.factors.index(f)
            dummies = (self.codes[:, i, None] == np.arange(1, self.shape[i])).astype(float)
            out = (out[:, :, None] * dummies[:, None, :]).reshape(len(out), -1)
        return out

    def matrix(self, terms: list[Term]) -> np.ndarray:
        return np.hstack([self.block(()), *(self.block(t) for t in terms)])

    def df(self, term: Term) -> int:
        return math.prod(self.shape[self.factors.index(f)] - 1 for f in term)


def _term(factors: Term) -> str:
    return ":".join(f"C({f})" for f in factors)


def anova_formula(response: str, terms: list[Term]) -> str:
    """``response ~ C(a) + C(b) + C(a):C(b)`` for the given factor tuples."""
    return f"{response} ~ " + " + ".join(_term(t) for t in terms)


def _estimable(design: _Design, terms: list[Term]) -> bool:
    p = 1 + sum(design.df(t) for t in terms)
    if p >= len(design.codes):
        return False
    # note: a complete grid's treatment-coded design always has full rank
    return design.complete or np.linalg.matrix_rank(design.matrix(terms)) == p


def choose_terms(df: pd.DataFrame, response: str, factors: list[str]) -> list[Term]:
    """Main effects plus the interactions the data can estimate (see module doc)."""
    design = _Design.of(df, factors)
    replicated = bool(df.groupby(factors).size().min() >= 2)
    cap = len(factors) if replicated else min(2, len(factors))
    terms: list[Term] = [(f,) for f in factors]
    for order in range(2, cap + 1):
        for combo in combinations(factors, order):
            if _estimable(design, [*terms, combo]):
                terms.append(combo)
    return terms


def _balanced_ss(design: _Design, terms: list[Term], y: np.ndarray) -> np.ndarray:
    """SS of each term (rows) for each response column of ``y`` (N × B), orthogonal case."""
    k, n = len(design.shape), int(design.counts[0])
    order = np.argsort(design.cells, kind="stable")
    ys = y[order].reshape(*design.shape, n, y.shape[1])
    means = ys.mean(axis=k)
    marginal: dict[tuple[int, ...], np.ndarray] = {}

    def mean_over_others(keep: tuple[int, ...]) -> np.ndarray:
        if keep not in marginal:
            others = tuple(a for a in range(k) if a not in keep)
            marginal[keep] = means.mean(axis=others, keepdims=True) if others else means
        return marginal[keep]

    out = np.empty((len(terms), y.shape[1]))
    for row, term in enumerate(terms):
        axes = tuple(sorted(design.factors.index(f) for f in term))
        effect = sum(
            (-1) ** (len(axes) - r) * mean_over_others(sub)
            for r in range(len(axes) + 1)
            for sub in combinations(axes, r)
        )
        copies = n * math.prod(s for a, s in enumerate(design.shape) if a not in axes)
        out[row] = copies * (effect**2).sum(axis=tuple(range(k)))
    return out


def _rss(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(x)
    resid = y - q @ (q.T @ y)
    return (resid**2).sum(axis=0)


def _sums_of_squares(
    design: _Design, terms: list[Term], y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(SS per term × column, residual SS per column, total SS per column) of ``y`` (N × B)."""
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    if design.balanced:
        ss = _balanced_ss(design, terms, y)
        return ss, total - ss.sum(axis=0), total
    ss = np.empty((len(terms), y.shape[1]))
    for row, term in enumerate(terms):
        others = [t for t in terms if t != term and not set(term) < set(t)]
        ss[row] = _rss(design.matrix(others), y) - _rss(design.matrix([*others, term]), y)
    return ss, _rss(design.matrix(terms), y), total


def anova_table(df: pd.DataFrame, response: str = "final") -> pd.DataFrame:
    """Type II ANOVA of ``response`` on the factors that vary in ``df``.

    Columns ``term, df, sum_sq, F, p_value, partial_eta_sq, omega_sq``, with ``term`` a
    factor or factors joined by ``:``, and a ``Residual`` row. partial η² = SS / (SS +
    SS_res); ω² = (SS − df·MS_res) / (SS_total + MS_res). ``attrs`` holds ``formula``,
    ``terms`` (factor tuples) and ``pooled`` (interactions left in the residual). Empty
    when no factor varies or there are too few observations.
    """
    df = df.dropna(subset=[response])
    factors = varying_factors(df)
    empty = pd.DataFrame(columns=ANOVA_COLUMNS)
    empty.attrs.update(formula="", terms=[], pooled=[])
    if not factors or not _estimable(_Design.of(df, factors), [(f,) for f in factors]):
        return empty
    terms = choose_terms(df, response, factors)
    design = _Design.of(df, factors)
    y = df[response].to_numpy(dtype=float)[:, None]
    ss, ss_res, ss_total = (a[..., 0] for a in _sums_of_squares(design, terms, y))
    dfs = np.array([design.df(t) for t in terms], dtype=float)
    df_res = len(y) - 1 - dfs.sum()
    ms_res = float(ss_res) / df_res
    f_value = (ss / dfs) / ms_res
    table = pd.DataFrame(
        {
            "term": [":".join(t) for t in terms] + ["Residual"],
            "df": [*dfs, df_res],
            "sum_sq": [*ss, float(ss_res)],
            "F": [*f_value, np.nan],
            "p_value": [*stats.f.sf(f_value, dfs, df_res), np.nan],
            "partial_eta_sq": [*(ss / (ss + ss_res)), np.nan],
            "omega_sq": [*((ss - dfs * ms_res) / (ss_total + ms_res)), np.nan],
        }
    )
    kept = set(terms)
    table.attrs.update(
        formula=anova_formula(response, terms),
        terms=terms,
        pooled=[
            ":".join(c)
            for order in range(2, len(factors) + 1)
            for c in combinations(factors, order)
            if c not in kept
        ],
    )
    return table


def _resample_within_cells(
    y: np.ndarray, cells: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_boot`` columns, each drawing every cell's seeds with replacement.

    Deviations from the cell mean are scaled by √(n/(n−1)) so that the resampled
    within-cell variance is unbiased; a cell with one seed stays as it is.
    """
    out = np.repeat(y[:, None], n_boot, axis=1)
    order = np.argsort(cells, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(cells[order]) != 0, True])
    groups = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    for m in sorted({len(g) for g in groups if len(g) >= 2}):
        idx = np.stack([g for g in groups if len(g) == m])
        values = y[idx]
        mean = values.mean(axis=1, keepdims=True)
        draws = rng.integers(0, m, size=(len(idx), m, n_boot))
        picked = np.take_along_axis(values[:, :, None], draws, axis=1)
        out[idx] = mean[:, :, None] + math.sqrt(m / (m - 1)) * (picked - mean[:, :, None])
    return out


def omega_sq_bootstrap(
    df: pd.DataFrame, anova: pd.DataFrame, response: str = "final", params: Params = DEFAULT_PARAMS
) -> pd.DataFrame:
    """ω² of each term of ``anova`` with a bias-corrected percentile interval from resampling
    the seeds within every cell (``params.n_boot_anova`` resamples, RNG seed
    ``params.rng_seed``).

    Columns ``term, omega_sq, ci_low, ci_high, p_value``, largest ω² first; no interval
    when no cell has two seeds.
    """
    columns = ["term", "omega_sq", "ci_low", "ci_high", "p_value"]
    terms: list[Term] = anova.attrs.get("terms", [])
    if not terms:
        return pd.DataFrame(columns=columns)
    df = df.dropna(subset=[response])
    design = _Design.of(df, varying_factors(df))
    y = df[response].to_numpy(dtype=float)
    effects = anova[anova["term"] != "Residual"]
    out = pd.DataFrame(
        {
            "term": effects["term"].to_numpy(),
            "omega_sq": effects["omega_sq"].to_numpy(),
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p_value": effects["p_value"].to_numpy(),
        }
    )
    if design.counts.max() >= 2:
        rng = np.random.default_rng(params.rng_seed)
        ys = _resample_within_cells(y, design.cells, params.n_boot_anova, rng)
        ss, ss_res, ss_total = _sums_of_squares(design, terms, ys)
        dfs = np.array([design.df(t) for t in terms], dtype=float)[:, None]
        ms_res = ss_res / float(anova["df"].iloc[-1])
        omega = (ss - dfs * ms_res) / (ss_total + ms_res)
        tail = (1.0 - params.level) / 2
        lo, hi = np.quantile(omega, [tail, 1.0 - tail], axis=1)
        # note: resampled seeds add their own noise to the cell means, which lifts the ω²
        # of every term (most visibly the null ones); the interval is moved back by that bias
        bias = omega.mean(axis=1) - out["omega_sq"].to_numpy()
        out["ci_low"], out["ci_high"] = lo - bias, hi - bias
    return out.sort_values("omega_sq", ascending=False, kind="stable").reset_index(drop=True)
