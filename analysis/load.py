"""Read a study's tables and split them into what the analyses may use.

Works on a finished study, one still in progress (only finished trials have a row in
``trials.parquet``; running trials have partial curves), and on hand-written tables
that hold only some of the columns. A study is a local directory or a URI such as
``s3://bucket/prefix``, read through ``gridrun.storage`` either way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from analysis.baselines import Baselines
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better
from gridrun.layout import (
    BASELINES_FILE,
    BEST_EPOCH_COLUMN,
    CURVES_FILE,
    DEFAULT_METRIC,
    FACTORS,
    FINAL_METRICS,
    GRID_FILE,
    TRIAL_FLOAT_COLUMNS,
    TRIAL_ID,
    TRIAL_KEY,
    TRIAL_TEXT_COLUMNS,
    TRIALS_FILE,
    Status,
    best_column,
    factor_names,
    final_column,
    trial_id,
)

if TYPE_CHECKING:
    from gridrun.storage import Storage

__all__ = [
    "FACTORS",
    "AnalysisInputError",
    "StudyData",
    "final_metrics",
    "load",
    "pad_runs",
    "rolling_runs",
    "split_runs",
    "split_trials",
    "study_storage",
    "varying_factors",
]

_URI_MANGLED_BY_PATH = re.compile(r"^([A-Za-z][\w+.-]+):/(?!/)")


class AnalysisInputError(ValueError):
    """Input a user can fix: a missing or unreadable table, an unknown metric."""


def study_storage(location: str | os.PathLike[str]) -> Storage:
    """The study (or report folder) at ``location``, a local path or a URI, as a
    ``gridrun.storage.Storage``."""
    # note: imported here, so `import analysis` stays free of pyarrow.fs
    from gridrun.storage import Storage

    text = os.fspath(location)
    # note: Path("s3://b/p") collapses the double slash; a caller's Path still means a URI
    return Storage(_URI_MANGLED_BY_PATH.sub(r"\1://", text) if isinstance(location, Path) else text)


def _name(storage: Storage) -> str:
    local = storage.local_path()  # file:// URIs are local directories too
    if local is not None:
        return local.resolve().name
    return storage.uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _read(files: Storage, rel: str) -> bytes | None:
    """The file's bytes, or None when there is no file `rel` (a folder is none)."""
    try:
        return files.read_bytes(rel)
    except FileNotFoundError:
        return None


@dataclass
class StudyData:
    """A study's tables, split into the trials the fits use and the ones they leave out.

    ``ok`` holds the finished trials with status ``ok``; ``curves`` only their epochs.
    ``excluded`` holds trials that failed, diverged or were infeasible, ``running`` the
    (cell_id, seed) pairs that have curves but no trial row yet. ``grid`` is the parsed
    ``grid.yaml`` (empty when absent), ``files`` the study's storage;
    ``baselines`` holds what trivial predictors score (``None`` for a study without
    ``baselines.json``).
    """

    location: str
    name: str
    metric: str
    trials: pd.DataFrame
    ok: pd.DataFrame
    excluded: pd.DataFrame
    curves: pd.DataFrame
    running: pd.DataFrame
    files: Storage
    grid: dict[str, Any] = field(default_factory=dict)
    params: Params = DEFAULT_PARAMS
    notes: list[str] = field(default_factory=list)
    baselines: Baselines | None = None

    @property
    def local_dir(self) -> Path | None:
        """The study's directory when it is local (as given, unless given as a URI);
        ``None`` on object storage."""
        local = self.files.local_path()
        if local is None or "://" in self.location:
            return local
        return Path(self.location).expanduser()

    @property
    def factors(self) -> tuple[str, ...]:
        """The study's factors: the four, then the settings its grid file names under
        ``factors:`` (dotted paths such as ``train.lr``) in name order; the four alone
        without a grid file."""
        factors = self.grid.get("factors")
        return factor_names(factors if isinstance(factors, dict) else None)

    @cached_property
    def final(self) -> pd.DataFrame:
        """:func:`final_metrics` of this study, computed once."""
        return final_metrics(self)

    def __repr__(self) -> str:
        return (
            f"StudyData({self.name!r}, metric={self.metric!r}: {len(self.trials)} trials, "
            f"{len(self.ok)} ok, {len(self.running)} running, {len(self.curves)} curve rows)"
        )


def varying_factors(df: pd.DataFrame, factors: Sequence[str] = FACTORS) -> list[str]:
    """The ``factors`` (a study's :attr:`StudyData.factors`) with at least two levels in
    ``df``, in that order."""
    return [f for f in factors if f in df.columns and df[f].nunique(dropna=True) >= 2]


def split_trials(
    curves: pd.DataFrame, factors: Sequence[str] = FACTORS
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Curves sorted by trial and epoch, one row per trial (key and ``factors``), and the
    bounds: trial ``i``'s epochs are rows ``bounds[i]:bounds[i + 1]`` of the sorted curves.
    """
    curves = curves.sort_values([*TRIAL_KEY, "epoch"], kind="stable").reset_index(drop=True)
    codes = curves.groupby(list(TRIAL_KEY), sort=False).ngroup().to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else codes
    present = [f for f in factors if f in FACTORS or f in curves.columns]
    heads = curves.iloc[starts][[*TRIAL_KEY, *present]].reset_index(drop=True)
    return curves, heads, np.r_[starts, len(curves)].astype(int)


def split_runs(
    curves: pd.DataFrame, factors: Sequence[str] = FACTORS
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """:func:`split_trials` plus each trial's training run: ``heads`` gains a
    ``training_run`` column (``<cell_id>_s<seed>``, the trial alone, where the curves
    name none) and ``longest[i]`` is the trial that holds trial ``i``'s whole run curve
    (the run's trial with the most epochs; shorter trials' curves are its first epochs).
    """
    curves, heads, bounds = split_trials(curves, factors)
    named = curves["training_run"] if "training_run" in curves.columns else None
    runs = pd.Series([None] * len(heads) if named is None else named.to_numpy()[bounds[:-1]])
    alone = [trial_id(c, s) for c, s in zip(heads["cell_id"], heads["seed"], strict=True)]
    heads = heads.assign(training_run=runs.where(runs.notna(), alone).to_numpy())
    length = pd.Series(np.diff(bounds))
    longest = length.groupby(heads["training_run"].to_numpy()).idxmax()
    return curves, heads, bounds, heads["training_run"].map(longest).to_numpy(int)


def rolling_runs(
    values: np.ndarray, bounds: np.ndarray, window: int, how: str, center: bool = False,
    min_periods: int | None = None,
) -> np.ndarray:  # fmt: skip
    """pandas' ``rolling(window, center, min_periods).<how>()`` (``how``: median, mean or
    min; NaNs skipped) within each trial's curve ``values[bounds[i] : bounds[i + 1]]``,
    all curves at once: each curve is padded with NaNs on both sides, so that no window
    reaches into the next, and rolled in one pass.

    note: ``groupby(...).rolling`` gave the same numbers 2-30× slower at 30,000 curves
    of 80 epochs (it finds window bounds group by group)."""
    values = np.asarray(values, dtype=float)
    needed = window if min_periods is None else min_periods
    # pandas' centred window at p spans p - window // 2 .. p + (window - 1) // 2
    left, right = (window // 2, (window - 1) // 2) if center else (window - 1, 0)
    group = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    at = np.arange(len(values)) + group * (left + right) + left
    padded = np.full(len(values) + (len(bounds) - 1) * (left + right), np.nan)
    padded[at] = values
    rolled = getattr(pd.Series(padded).rolling(window, min_periods=needed), how)()
    return rolled.to_numpy()[at + right]


def pad_runs(
    values: np.ndarray, bounds: np.ndarray, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Curves as the rows of one NaN-padded matrix, and each row's length: row ``r`` is
    ``values[bounds[t] : bounds[t + 1]]`` for trial ``t = rows[r]`` (every trial when
    ``rows`` is None), so that a rule can be applied to all curves at once along axis 1."""
    values = np.asarray(values, dtype=float)
    rows = np.arange(len(bounds) - 1) if rows is None else np.asarray(rows, dtype=int)
    starts = np.asarray(bounds)[rows]
    lengths = np.asarray(bounds)[rows + 1] - starts
    width = int(lengths.max()) if len(rows) else 0
    column = np.arange(width)
    inside = column < lengths[:, None]
    out = np.full((len(rows), width), np.nan)
    out[inside] = values[(starts[:, None] + column)[inside]]
    return out, lengths


def _read_tables(files: Storage) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Both tables with the parts a running study has appended; None for a missing one."""
    from gridrun.storage import TableReadError, read_tables

    try:
        return read_tables(files)
    except TableReadError as exc:
        raise AnalysisInputError(str(exc)) from exc
    except OSError as exc:
        raise AnalysisInputError(f"cannot read the tables of {files}: {exc}") from exc


def _read_grid(files: Storage, notes: list[str]) -> dict[str, Any]:
    data = _read(files, GRID_FILE)
    if data is None:
        return {}
    try:
        grid = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        notes.append(f"{GRID_FILE} is unreadable ({exc}); the header leaves it out.")
        return {}
    return grid if isinstance(grid, dict) else {}


def _read_baselines(files: Storage, notes: list[str]) -> Baselines | None:
    data = _read(files, BASELINES_FILE)
    if data is None:
        return None  # note: the collapse check says what its absence means
    try:
        return Baselines.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        notes.append(f"{BASELINES_FILE} is unreadable ({exc}): no collapse check.")
        return None


def _parse_status(value: object) -> Status:
    try:
        return Status.parse(value)
    except ValueError:
        known = ", ".join(Status)
        raise AnalysisInputError(
            f"{TRIALS_FILE}: unknown status {value!r}; known: {known}"
        ) from None


def _normalise_trials(trials: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """The trials with every column the analyses read and `status` parsed to `Status`.

    A hand-written table without a status column lists trials that finished well: every
    row is OK. Where the column exists, a blank status (the runner always writes one) is
    not known to have finished well: the row is left out as FAILED and a note says so.
    """
    missing = [c for c in (*TRIAL_KEY, *FACTORS) if c not in trials.columns]
    if missing:
        raise AnalysisInputError(f"{TRIALS_FILE} lacks column(s) {', '.join(missing)}")
    trials = trials.copy()
    if "status" not in trials.columns:
        trials["status"] = Status.OK
    for col in TRIAL_FLOAT_COLUMNS:
        if col not in trials.columns:
            trials[col] = np.nan
    for col in TRIAL_TEXT_COLUMNS:
        if col not in trials.columns:
            trials[col] = None
    trials["cell_id"] = trials["cell_id"].astype(str)
    # note: a resumed study may have written a trial twice; the last row wins
    trials = trials.drop_duplicates(list(TRIAL_KEY), keep="last").reset_index(drop=True)
    status = trials["status"].astype(object)
    blank = status.isna()
    if blank.any():
        notes.append(f"{blank.sum()} trials have no status: left out as {Status.FAILED}.")
    trials["status"] = status.where(~blank, Status.FAILED).map(_parse_status)
    return trials


def _normalise_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """note: changes ``curves`` (a frame :func:`load` has just read) in place; a copy
    of 2.4 M rows cost 0.9 s of a 10,000-cell report"""
    curves["cell_id"] = curves["cell_id"].astype(str)
    for col in FINAL_METRICS:
        if col not in curves.columns:
            curves[col] = np.nan
    if "training_run" not in curves.columns:
        curves["training_run"] = None
    curves = curves.drop_duplicates([*TRIAL_KEY, "epoch"], keep="last")
    return curves.sort_values([*TRIAL_KEY, "epoch"]).reset_index(drop=True)


def _check_metric(metric: str, trials: pd.DataFrame, curves: pd.DataFrame) -> None:
    if metric in curves.columns or final_column(metric) in trials.columns:
        return
    prefix = final_column("")
    known = sorted(c for c in curves.columns if c.startswith(("val_", "train_")))
    known += sorted(c[len(prefix) :] for c in trials.columns if c.startswith(prefix))
    raise AnalysisInputError(
        f"unknown metric {metric!r}; known: {', '.join(dict.fromkeys(known)) or 'none'}"
    )


def load(
    location: str | Path, metric: str = DEFAULT_METRIC, params: Params = DEFAULT_PARAMS
) -> StudyData:
    """Read ``trials.parquet``, ``curves.parquet`` and ``grid.yaml`` of a study.

    ``location`` is a directory or a URI (``s3://...``, read through ``gridrun.storage``).
    Raises :class:`AnalysisInputError` when ``trials.parquet`` is missing or unreadable,
    or when ``metric`` is in neither table.
    """
    files = study_storage(location)
    table, curves_table = _read_tables(files)
    if table is None:
        raise AnalysisInputError(f"no trials table at {location}/{TRIALS_FILE}")
    notes: list[str] = []
    trials = _normalise_trials(table, notes)
    table = curves_table
    if table is None:
        table = pd.DataFrame(columns=[*TRIAL_KEY, *FACTORS, "epoch", *FINAL_METRICS])
        notes.append(f"{CURVES_FILE} is missing: curve analyses are skipped.")
    curves = _normalise_curves(table)
    _check_metric(metric, trials, curves)

    is_ok = trials["status"] == Status.OK
    ok, excluded = trials[is_ok].reset_index(drop=True), trials[~is_ok].reset_index(drop=True)
    if len(excluded):
        counts = excluded["status"].value_counts()
        parts = ", ".join(f"{n} {status}" for status, n in counts.items())
        notes.append(f"{len(excluded)} trials left out of the fits ({parts}).")

    keys = curves[list(TRIAL_KEY)].drop_duplicates()
    in_table = keys.merge(trials[list(TRIAL_KEY)], on=list(TRIAL_KEY), how="left", indicator=True)
    running = in_table.loc[in_table["_merge"] == "left_only", list(TRIAL_KEY)]
    if len(running):
        notes.append(f"{len(running)} trials still running: left out until they finish.")
    ok_curves = curves.merge(ok[list(TRIAL_KEY)], on=list(TRIAL_KEY), how="inner")

    return StudyData(
        location=str(location),
        name=_name(files),
        metric=metric,
        trials=trials,
        ok=ok,
        excluded=excluded,
        curves=ok_curves,
        running=running.reset_index(drop=True),
        files=files,
        grid=_read_grid(files, notes),
        params=params,
        notes=notes,
        baselines=_read_baselines(files, notes),
    )


def final_metrics(data: StudyData) -> pd.DataFrame:
    """One row per finished ``ok`` trial: factors, ``final`` and ``best`` metric, costs.

    ``final`` is the metric at the trial's last epoch and ``best`` its best epoch's
    value, both from the curves; without curves they fall back to the trials table's
    ``final_<metric>`` (and ``best_val_iou``, the one best column the runner writes).
    Trials whose final metric is null are dropped.
    """
    metric, ok = data.metric, data.ok
    extra = [f for f in data.factors[len(FACTORS) :] if f in ok.columns]
    cols = [
        *TRIAL_KEY, *FACTORS, *extra, TRIAL_ID, "training_run", "predictions", "steps",
        "train_time_s", "peak_mem_mb",
    ]  # fmt: skip
    out = ok[cols].copy()
    curves = data.curves
    if metric in curves.columns and len(curves):
        c = curves.dropna(subset=[metric])
        grouped = c.groupby(list(TRIAL_KEY), sort=False)
        last = grouped.tail(1).set_index(list(TRIAL_KEY))[metric].rename("final")
        pick = grouped[metric].idxmax() if higher_is_better(metric) else grouped[metric].idxmin()
        best = c.loc[pick.to_numpy(), [*TRIAL_KEY, "epoch", metric]]
        best = best.rename(columns={metric: "best", "epoch": "best_epoch"})
        out = out.join(last, on=list(TRIAL_KEY)).merge(best, on=list(TRIAL_KEY), how="left")
        if final_column(metric) in ok.columns:
            # note: a trial whose curve rows are missing still has its summary row
            fallback = ok.set_index(list(TRIAL_KEY))[final_column(metric)].astype(float)
            keys = pd.MultiIndex.from_frame(out[list(TRIAL_KEY)])
            out["final"] = out["final"].fillna(pd.Series(fallback.reindex(keys).to_numpy()))
    else:
        out["final"] = ok[final_column(metric)].to_numpy(dtype=float)
        best = best_column(metric)
        out["best"] = ok[best].to_numpy(dtype=float) if best else np.nan
        out["best_epoch"] = ok[BEST_EPOCH_COLUMN].to_numpy(dtype=float) if best else np.nan
    out = out.dropna(subset=["final"])
    return out.sort_values(list(TRIAL_KEY)).reset_index(drop=True)
