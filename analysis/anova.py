"""Factorial ANOVA of the final metric: categorical factors, Type II sums of squares,
the training run as the unit, and bootstrap intervals of each term's ω².

The unit: trials that differ only in ``epochs`` are one training run read at several
epochs (the ``training_run`` column), not independent observations. When some run holds
several trials the ANOVA is a split plot with the training run as the whole plot: a
term of factors that are constant within every run (image size, data set size, batch
size and their interactions) is tested against the variation between runs, the
whole-plot error SS = Σ_runs k·(mean residual of the run)², df = runs − 1 − Σ df(between
terms); a term containing a factor that varies within runs (``epochs`` and its
interactions) is tested against the rest of the residual, the variation within runs,
df = N − runs − Σ df(within terms). Without sharing (every trial its own run, or no
``training_run`` column) there is one residual, as in an ordinary ANOVA.

How the interaction order is chosen: the cap is every order (up to all the varying
factors) when each observed cell has at least two replicates (seeds), else two-way.
Terms are added by increasing order; a term is kept only if the design stays full rank
with error df > 0 in its stratum, so interactions that an incomplete grid (infeasible
cells) cannot estimate, or that would leave no error, are pooled into the residual
instead. Unreplicated grids thus get main effects and two-way interactions with the
higher orders as error.

Sums of squares: Type II, SS(T) = RSS(terms not containing T) − RSS(those + T). A
complete grid with equal seeds per cell is orthogonal, and then SS(T) is read off the
cell means by inclusion–exclusion of marginal means, which costs nothing even for a
thousand cells; other grids are fitted by least squares (QR) on treatment-coded
dummies. Both agree with ``statsmodels``' ``anova_lm(typ=2)`` (the tests check it).

ω² of term T: its variance component (SS_T − df_T·MS_err(T))/N over the total, the
components of all terms plus the error components σ²_within = MS_within and σ²_run =
(MS_between − MS_within)/k̄ (k̄ trials per run, clipped at 0). The terms' components are
summed as (SS_model − Σ df_T·MS_err(T))/N, SS_model the full model's SS (Σ SS_T in an
orthogonal grid), so that with one stratum ω² = (SS_T − df_T·MS_res)/(SS_total + MS_res).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import FACTORS, varying_factors
from analysis.params import DEFAULT_PARAMS, Params

__all__ = ["anova_formula", "anova_table", "choose_terms", "omega_sq_bootstrap"]

ANOVA_COLUMNS: list[str] = [
    "term", "df", "sum_sq", "F", "p_value", "partial_eta_sq", "omega_sq", "stratum"
]  # fmt: skip
BETWEEN, WITHIN = "between runs", "within runs"
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

    def collapsed(self) -> tuple[_Design, np.ndarray, np.ndarray]:
        """One row per occupied cell, the cell of each row and each cell's count: every
        row of a cell has the same row of a design matrix, so a fit needs only these."""
        occupied, first, inverse, counts = np.unique(
            self.cells, return_index=True, return_inverse=True, return_counts=True
        )
        return _Design(self.factors, self.shape, self.codes[first], occupied), inverse, counts

    def df(self, term: Term) -> int:
        return math.prod(self.shape[self.factors.index(f)] - 1 for f in term)


@dataclass(frozen=True)
class _Runs:
    """The training run of each row, when some run holds several trials (which then
    differ only in the ``within`` factors).

    ``complete``: every run holds each level combination of the within factors once, so
    in a balanced grid the within terms are orthogonal to the runs.
    """

    index: np.ndarray
    sizes: np.ndarray
    within: tuple[str, ...]
    complete: bool

    @classmethod
    def of(cls, df: pd.DataFrame, factors: list[str]) -> _Runs | None:
        if "training_run" not in df.columns or df["training_run"].isna().all():
            return None
        names = df["training_run"].astype(str).to_numpy(copy=True)
        alone = df["training_run"].isna().to_numpy()
        # note: a trial without a run name is a run of its own
        names[alone] = [f"\0{i}" for i in np.flatnonzero(alone)]
        index = pd.factorize(names)[0]
        sizes = np.bincount(index)
        if sizes.max() < 2:
            return None
        spread = df.groupby(index)[factors].nunique().max()
        within = tuple(f for f in factors if spread[f] > 1)
        combos = math.prod(int(df[f].nunique()) for f in within)
        slots = pd.DataFrame({"run": index, **{f: df[f].to_numpy() for f in within}})
        complete = bool(within) and bool((sizes == combos).all()) and not slots.duplicated().any()
        return cls(index, sizes, within, complete)

    @property
    def count(self) -> int:
        return len(self.sizes)

    def varies_within(self, term: Term) -> bool:
        return bool(set(term) & set(self.within))

    def sums(self, y: np.ndarray) -> np.ndarray:
        """Per run and column of ``y`` (N × B), the sum of its rows."""
        out = np.zeros((self.count, y.shape[1]))
        np.add.at(out, self.index, y)
        return out


def _term(factors: Term) -> str:
    # note: a setting's dotted path (train.lr) is no Python name; patsy reads it quoted
    return ":".join(f"C({f})" if f.isidentifier() else f"C(Q({f!r}))" for f in factors)


def anova_formula(response: str, terms: list[Term]) -> str:
    """``response ~ C(a) + C(b) + C(a):C(b)`` for the given factor tuples; a dotted
    name such as ``train.lr`` is quoted (``C(Q('train.lr'))``), as statsmodels reads it."""
    return f"{response} ~ " + " + ".join(_term(t) for t in terms)


def _error_df(design: _Design, terms: list[Term], runs: _Runs | None) -> tuple[int, ...]:
    """Error df of each stratum: (residual,) or (between runs, within runs)."""
    n = len(design.codes)
    dfs = [design.df(t) for t in terms]
    if runs is None:
        return (n - 1 - sum(dfs),)
    within = sum(d for t, d in zip(terms, dfs, strict=True) if runs.varies_within(t))
    between = sum(dfs) - within
    return runs.count - 1 - between, n - runs.count - within


def _estimable(design: _Design, terms: list[Term], runs: _Runs | None = None) -> bool:
    p = 1 + sum(design.df(t) for t in terms)
    if p >= len(design.codes) or min(_error_df(design, terms, runs)) <= 0:
        return False
    # note: a complete grid's treatment-coded design always has full rank
    return design.complete or np.linalg.matrix_rank(design.collapsed()[0].matrix(terms)) == p


def choose_terms(df: pd.DataFrame, response: str, factors: list[str]) -> list[Term]:
    """Main effects plus the interactions the data can estimate (see module doc)."""
    design = _Design.of(df, factors)
    runs = _Runs.of(df, factors)
    replicated = bool(df.groupby(factors).size().min() >= 2)
    cap = len(factors) if replicated else min(2, len(factors))
    terms: list[Term] = [(f,) for f in factors]
    for order in range(2, cap + 1):
        for combo in combinations(factors, order):
            if _estimable(design, [*terms, combo], runs):
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


def _residuals(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(x)
    return y - q @ (q.T @ y)


def _rss(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (_residuals(x, y) ** 2).sum(axis=0)


@dataclass(frozen=True)
class _SumsOfSquares:
    """Per response column: ``terms`` (T × B), ``residual``, ``total`` and, with shared
    runs, ``between`` (the whole-plot error, Σ_runs k·(mean residual)²)."""

    terms: np.ndarray
    residual: np.ndarray
    total: np.ndarray
    between: np.ndarray | None


def _sums_of_squares(
    design: _Design, terms: list[Term], y: np.ndarray, runs: _Runs | None = None
) -> _SumsOfSquares:
    """The sums of squares of ``y`` (N × B), one column per response."""
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    if design.balanced and (runs is None or runs.complete):
        ss = _balanced_ss(design, terms, y)
        between = None
        if runs is not None:
            # note: complete runs in a balanced grid: the within terms have no part in the
            # run means, so the whole-plot error is what the between terms leave of them
            sums = runs.sums(y)
            run_ss = (sums**2 / runs.sizes[:, None]).sum(axis=0) - y.sum(axis=0) ** 2 / len(y)
            mask = [not runs.varies_within(t) for t in terms]
            between = np.maximum(run_ss - ss[mask].sum(axis=0), 0.0)
        return _SumsOfSquares(ss, total - ss.sum(axis=0), total, between)
    # note: least squares on the cell means weighted by √count: the same fit as on the
    # rows (a design matrix is constant within a cell), with one row per cell; the
    # within-cell scatter adds the same to every model's RSS and cancels in each SS
    cells, inverse, counts = design.collapsed()
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    means = np.add.reduceat(y[order], starts, axis=0) / counts[:, None]
    weight = np.sqrt(counts)[:, None]
    wy = weight * means
    ss = np.empty((len(terms), y.shape[1]))
    for row, term in enumerate(terms):
        others = [t for t in terms if t != term and not set(term) < set(t)]
        ss[row] = _rss(weight * cells.matrix(others), wy) - _rss(
            weight * cells.matrix([*others, term]), wy
        )
    fitted = means - _residuals(weight * cells.matrix(terms), wy) / weight
    resid = y - fitted[inverse]
    between = None
    if runs is not None:
        between = (runs.sums(resid) ** 2 / runs.sizes[:, None]).sum(axis=0)
    return _SumsOfSquares(ss, (resid**2).sum(axis=0), total, between)


@dataclass(frozen=True)
class _Tests:
    """Per term (rows) and response column: F, p, partial η², ω²; per stratum the error SS."""

    f: np.ndarray
    p: np.ndarray
    partial_eta_sq: np.ndarray
    omega_sq: np.ndarray
    error_ss: np.ndarray


def _tests(
    sums: _SumsOfSquares, dfs: np.ndarray, stratum: np.ndarray, error_df: tuple[int, ...], n: int
) -> _Tests:
    """Each term tested against its stratum's error (``stratum`` indexes ``error_df``)."""
    if sums.between is None:
        error_ss = sums.residual[None, :]
    else:
        error_ss = np.stack([sums.between, sums.residual - sums.between])
    err_df = np.array(error_df, dtype=float)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ms = np.where(err_df > 0, error_ss / err_df, np.nan)
        ms_term, ss_term = ms[stratum], error_ss[stratum]
        f = (sums.terms / dfs[:, None]) / ms_term
        p = stats.f.sf(f, dfs[:, None], err_df[stratum])
        eta = sums.terms / (sums.terms + ss_term)
    if len(error_df) == 1:
        noise = ms[0]
    else:
        # note: E[MS_between] = σ²_within + k̄·σ²_run with k̄ trials per run
        k_bar = n / (error_df[0] + 1 + dfs[stratum == 0].sum())
        noise = ms[1] + np.maximum((ms[0] - ms[1]) / k_bar, 0.0)
    parts = dfs[:, None] * ms_term
    model = sums.total - sums.residual
    with np.errstate(divide="ignore", invalid="ignore"):
        omega = ((sums.terms - parts) / n) / ((model - parts.sum(axis=0)) / n + noise)
    return _Tests(f, p, eta, omega, error_ss)


def _strata(terms: list[Term], runs: _Runs | None) -> np.ndarray:
    """0 for a term tested between runs, 1 within runs."""
    return np.array([int(runs is not None and runs.varies_within(t)) for t in terms], dtype=int)


def _names(terms: list[Term]) -> str:
    return ", ".join(":".join(t) for t in terms)


def _unit_sentence(
    factors: list[str], runs: _Runs | None, error_df: tuple[int, ...], n: int
) -> str:
    if runs is None:
        return (
            f"Every trial is its own training run, so the ANOVA counts each of the {n} "
            f"trials as one observation (error df {error_df[0]})."
        )
    between = [f for f in factors if f not in runs.within]
    within = list(runs.within)
    between_text = (
        f"between-run factors ({', '.join(between)} and their interactions) are tested on "
        f"one value per training run against the variation between runs ({runs.count} runs, "
        f"error df {error_df[0]})"
    )
    if not within:
        return (
            f"Several trials share a training run without differing in any factor ({n} "
            f"trials from {runs.count} runs), so the ANOVA takes the run as its unit: "
            f"{between_text}."
        )
    read = "at several epochs" if within == ["epochs"] else "several times"
    return (
        f"Trials that differ only in {' and '.join(within)} are one training run read {read} "
        f"({n} trials from {runs.count} runs), so the ANOVA takes the run as its unit: "
        f"{between_text if between else 'no factor varies between runs only'}; "
        f"{', '.join(within)} and {'its' if len(within) == 1 else 'their'} interactions vary "
        f"within runs and are tested against the variation within runs (error df "
        f"{error_df[1]})."
    )


def anova_table(
    df: pd.DataFrame, response: str = "final", factors: Sequence[str] = FACTORS
) -> pd.DataFrame:
    """Type II ANOVA of ``response`` on the ``factors`` (a study's
    :attr:`analysis.load.StudyData.factors`) that vary in ``df``, each categorical (text
    levels too), with the training run as the unit where runs are shared (see module doc).

    Columns ``term, df, sum_sq, F, p_value, partial_eta_sq, omega_sq, stratum``: ``term``
    a factor or factors joined by ``:``; ``stratum`` "between runs" or "within runs", the
    error each term is tested against; partial η² = SS / (SS + SS_err); ω² as in the
    module doc. The error rows: ``Residual`` without shared runs, else
    ``Residual (between runs)`` and ``Residual (within runs)``. ``attrs``: ``formula``,
    ``terms`` (factor tuples), ``pooled`` (interactions left in the residual), ``unit``
    (a sentence saying what the observations are and what each term is tested against),
    ``strata`` ({stratum: term names}) and ``runs`` (training runs; the trials without
    sharing) and ``factors`` (the varying factors). F and p are NaN for a term whose
    stratum has no error df. Empty when no factor varies or there are too few
    observations.
    """
    df = df.dropna(subset=[response])
    factors = varying_factors(df, factors)
    empty = pd.DataFrame(columns=ANOVA_COLUMNS)
    empty.attrs.update(formula="", terms=[], pooled=[], unit="", strata={}, runs=0, factors=[])
    if not factors or not _estimable(_Design.of(df, factors), [(f,) for f in factors]):
        return empty
    terms = choose_terms(df, response, factors)
    design = _Design.of(df, factors)
    runs = _Runs.of(df, factors)
    y = df[response].to_numpy(dtype=float)[:, None]
    sums = _sums_of_squares(design, terms, y, runs)
    dfs = np.array([design.df(t) for t in terms], dtype=float)
    stratum = _strata(terms, runs)
    error_df = _error_df(design, terms, runs)
    tests = _tests(sums, dfs, stratum, error_df, len(y))
    labels = np.array([BETWEEN, WITHIN])
    errors = ["Residual"] if runs is None else [f"Residual ({s})" for s in labels]
    table = pd.DataFrame(
        {
            "term": [":".join(t) for t in terms] + errors,
            "df": [*dfs, *map(float, error_df)],
            "sum_sq": [*sums.terms[:, 0], *tests.error_ss[:, 0]],
            "F": [*tests.f[:, 0], *[np.nan] * len(errors)],
            "p_value": [*tests.p[:, 0], *[np.nan] * len(errors)],
            "partial_eta_sq": [*tests.partial_eta_sq[:, 0], *[np.nan] * len(errors)],
            "omega_sq": [*tests.omega_sq[:, 0], *[np.nan] * len(errors)],
            "stratum": [*labels[stratum], *labels[: len(errors)]],
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
        unit=_unit_sentence(factors, runs, error_df, len(y)),
        strata={
            str(label): [":".join(t) for t, s in zip(terms, stratum, strict=True) if s == i]
            for i, label in enumerate(labels[: len(errors)])
        },
        runs=len(y) if runs is None else runs.count,
        factors=factors,
    )
    return table


def _resampling_groups(design: _Design, runs: _Runs | None) -> list[np.ndarray]:
    """Row indices (runs × slots) of the training runs that are resampled together: the
    runs of one between-run cell that hold the same within-run cells."""
    if runs is None:
        run, slot, between = np.arange(len(design.codes)), np.zeros(len(design.codes)), design.cells
    else:
        axes = [design.factors.index(f) for f in runs.within]
        shape = [design.shape[a] for a in axes]
        rest = [a for a in range(len(design.factors)) if a not in axes]
        run = runs.index
        slot = np.ravel_multi_index(design.codes[:, axes].T, shape)
        between = (
            np.ravel_multi_index(design.codes[:, rest].T, [design.shape[a] for a in rest])
            if rest
            else np.zeros(len(run), dtype=int)
        )
    order = np.lexsort((slot, run, between))
    starts = np.flatnonzero(np.r_[True, np.diff(run[order]) != 0])
    members: dict[tuple, list[np.ndarray]] = {}
    for rows in np.split(order, starts[1:]):
        members.setdefault((between[rows[0]], tuple(slot[rows])), []).append(rows)
    return [np.stack(g) for _, g in sorted(members.items(), key=lambda kv: kv[0][0])]


def _resample_runs(
    y: np.ndarray, groups: list[np.ndarray], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_boot`` columns, each drawing every group's training runs with replacement
    (a run's trials together).

    Deviations from the group mean are scaled by √(m/(m−1)) so that the resampled
    variance between runs is unbiased; a group of one run stays as it is.
    """
    out = np.repeat(y[:, None], n_boot, axis=1)
    for shape in sorted({g.shape for g in groups if len(g) >= 2}):
        m = shape[0]
        idx = np.stack([g for g in groups if g.shape == shape])
        values = y[idx][..., None]
        mean = values.mean(axis=1, keepdims=True)
        draws = rng.integers(0, m, size=(len(idx), m, n_boot))[:, :, None, :]
        picked = np.take_along_axis(values, draws, axis=1)
        out[idx] = mean + math.sqrt(m / (m - 1)) * (picked - mean)
    return out


def omega_sq_bootstrap(
    df: pd.DataFrame, anova: pd.DataFrame, response: str = "final", params: Params = DEFAULT_PARAMS
) -> pd.DataFrame:
    """ω² of each term of ``anova`` with a bias-corrected percentile interval from resampling
    whole training runs (all their trials together; the trials where runs are not shared)
    within every between-run cell (``params.n_boot_anova`` resamples, RNG seed
    ``params.rng_seed``).

    Columns ``term, omega_sq, ci_low, ci_high, p_value``, largest ω² first; no interval
    when no cell has two runs.
    """
    columns = ["term", "omega_sq", "ci_low", "ci_high", "p_value"]
    terms: list[Term] = anova.attrs.get("terms", [])
    if not terms:
        return pd.DataFrame(columns=columns)
    df = df.dropna(subset=[response])
    factors = list(anova.attrs.get("factors") or varying_factors(df))
    design, runs = _Design.of(df, factors), _Runs.of(df, factors)
    y = df[response].to_numpy(dtype=float)
    effects = anova.iloc[: len(terms)]
    out = pd.DataFrame(
        {
            "term": effects["term"].to_numpy(),
            "omega_sq": effects["omega_sq"].to_numpy(),
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p_value": effects["p_value"].to_numpy(),
        }
    )
    groups = _resampling_groups(design, runs)
    if max(len(g) for g in groups) >= 2:
        rng = np.random.default_rng(params.rng_seed)
        ys = _resample_runs(y, groups, params.n_boot_anova, rng)
        sums = _sums_of_squares(design, terms, ys, runs)
        dfs = np.array([design.df(t) for t in terms], dtype=float)
        error_df = _error_df(design, terms, runs)
        omega = _tests(sums, dfs, _strata(terms, runs), error_df, len(y)).omega_sq
        tail = (1.0 - params.level) / 2
        lo, hi = np.quantile(omega, [tail, 1.0 - tail], axis=1)
        # note: resampled runs add their own noise to the cell means, which lifts the ω²
        # of every term (most visibly the null ones); the interval is moved back by that bias
        bias = omega.mean(axis=1) - out["omega_sq"].to_numpy()
        out["ci_low"], out["ci_high"] = lo - bias, hi - bias
    return out.sort_values("omega_sq", ascending=False, kind="stable").reset_index(drop=True)
