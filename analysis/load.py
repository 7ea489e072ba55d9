"""Read a study's tables and split them into what the analyses may use.

Works on a finished study, one still in progress (only finished trials have a row in
``trials.parquet``; running trials have partial curves), and on hand-written tables
that hold only some of the columns. A study is a local directory or, through
``gridrun.storage``, a URI such as ``s3://bucket/prefix``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import yaml

from analysis.baselines import Baselines
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better
from gridrun.layout import BASELINES_FILE, CURVES_FILE, FACTORS, GRID_FILE, TRIALS_FILE

__all__ = [
    "FACTORS",
    "AnalysisInputError",
    "RunData",
    "final_metrics",
    "load",
    "split_runs",
    "split_trials",
    "varying_factors",
]

TRIAL_KEY: tuple[str, str] = ("cell_id", "seed")

_FLOAT_COLUMNS = (
    "final_val_iou", "final_train_iou", "final_val_loss", "final_train_loss", "best_val_iou",
    "best_epoch", "steps", "train_time_s", "peak_mem_mb",
)  # fmt: skip
_TEXT_COLUMNS = (
    "status", "error", "run_id", "training_run", "checkpoint", "predictions", "node_id",
    "node_ip",
)  # fmt: skip
_CURVE_COLUMNS: tuple[str, ...] = ("train_loss", "train_iou", "val_loss", "val_iou")
_URI_MANGLED_BY_PATH = re.compile(r"^([A-Za-z][\w+.-]+):/(?!/)")


class AnalysisInputError(ValueError):
    """Input a user can fix: a missing or unreadable table, an unknown metric."""


class StudyFiles(Protocol):
    """The part of ``gridrun.storage.Storage`` the analysis reads through."""

    def exists(self, rel: str) -> bool: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def join(self, rel: str) -> str: ...


@dataclass(frozen=True)
class _LocalFiles:
    root: Path

    @property
    def uri(self) -> str:
        return str(self.root)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def join(self, rel: str) -> str:
        return str(self.root / rel)

    def read_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()


def _open(location: str | Path) -> tuple[StudyFiles, str]:
    """The study's files and its printable name; URIs go through ``gridrun.storage``."""
    text = str(location)
    # note: Path("s3://b/p") collapses the double slash; a caller's Path still means a URI
    text = _URI_MANGLED_BY_PATH.sub(r"\1://", text) if isinstance(location, Path) else text
    if "://" not in text:
        return _LocalFiles(Path(location)), Path(location).resolve().name
    from gridrun.storage import Storage

    storage = Storage(text)
    local = storage.local_path("")  # file:// URIs are local directories
    if local is not None:
        return _LocalFiles(local), local.name
    return storage, text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


@dataclass
class RunData:
    """A study's tables, split into the trials the fits use and the ones they leave out.

    ``ok`` holds the finished trials with status ``ok``; ``curves`` only their epochs.
    ``excluded`` holds trials that failed, diverged or were infeasible, ``running`` the
    (cell_id, seed) pairs that have curves but no trial row yet. ``grid`` is the parsed
    ``grid.yaml`` (empty when absent), ``files`` reads the study's other files;
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
    files: StudyFiles
    grid: dict[str, Any] = field(default_factory=dict)
    params: Params = DEFAULT_PARAMS
    notes: list[str] = field(default_factory=list)
    baselines: Baselines | None = None

    @property
    def local_dir(self) -> Path | None:
        """The study's directory when it is local; ``None`` on object storage."""
        return self.files.root if isinstance(self.files, _LocalFiles) else None

    @cached_property
    def final(self) -> pd.DataFrame:
        """:func:`final_metrics` of this study, computed once."""
        return final_metrics(self)

    def __repr__(self) -> str:
        return (
            f"RunData({self.name!r}, metric={self.metric!r}: {len(self.trials)} trials, "
            f"{len(self.ok)} ok, {len(self.running)} running, {len(self.curves)} curve rows)"
        )


def varying_factors(df: pd.DataFrame) -> list[str]:
    """The factors with at least two levels in ``df``, in canonical order."""
    return [f for f in FACTORS if f in df.columns and df[f].nunique(dropna=True) >= 2]


def split_trials(curves: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Curves sorted by trial and epoch, one row per trial (key and factors), and the
    bounds: trial ``i``'s epochs are rows ``bounds[i]:bounds[i + 1]`` of the sorted curves.
    """
    curves = curves.sort_values([*TRIAL_KEY, "epoch"], kind="stable").reset_index(drop=True)
    codes = curves.groupby(list(TRIAL_KEY), sort=False).ngroup().to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else codes
    heads = curves.iloc[starts][[*TRIAL_KEY, *FACTORS]].reset_index(drop=True)
    return curves, heads, np.r_[starts, len(curves)].astype(int)


def split_runs(
    curves: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """:func:`split_trials` plus each trial's training run: ``heads`` gains a
    ``training_run`` column (``<cell_id>_s<seed>``, the trial alone, where the curves
    name none) and ``longest[i]`` is the trial that holds trial ``i``'s whole run curve
    (the run's trial with the most epochs; shorter trials' curves are its first epochs).
    """
    curves, heads, bounds = split_trials(curves)
    named = curves["training_run"] if "training_run" in curves.columns else None
    runs = pd.Series([None] * len(heads) if named is None else named.to_numpy()[bounds[:-1]])
    alone = heads["cell_id"].astype(str) + "_s" + heads["seed"].astype(str)
    heads = heads.assign(training_run=runs.where(runs.notna(), alone).to_numpy())
    length = pd.Series(np.diff(bounds))
    longest = length.groupby(heads["training_run"].to_numpy()).idxmax()
    return curves, heads, bounds, heads["training_run"].map(longest).to_numpy(int)


def _read_parquet(files: StudyFiles, rel: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(files.read_bytes(rel)))
    except Exception as exc:  # noqa: BLE001 - any reader error means the same to the user
        raise AnalysisInputError(f"cannot read {rel}: {exc}") from exc


def _read_grid(files: StudyFiles, notes: list[str]) -> dict[str, Any]:
    if not files.exists(GRID_FILE):
        return {}
    try:
        grid = yaml.safe_load(files.read_bytes(GRID_FILE))
    except yaml.YAMLError as exc:
        notes.append(f"{GRID_FILE} is unreadable ({exc}); the header leaves it out.")
        return {}
    return grid if isinstance(grid, dict) else {}


def _read_baselines(files: StudyFiles, notes: list[str]) -> Baselines | None:
    if not files.exists(BASELINES_FILE):
        return None  # note: the collapse check says what its absence means
    try:
        return Baselines.from_json(files.read_bytes(BASELINES_FILE))
    except (ValueError, KeyError, TypeError) as exc:
        notes.append(f"{BASELINES_FILE} is unreadable ({exc}): no collapse check.")
        return None


def _normalise_trials(trials: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (*TRIAL_KEY, *FACTORS) if c not in trials.columns]
    if missing:
        raise AnalysisInputError(f"{TRIALS_FILE} lacks column(s) {', '.join(missing)}")
    trials = trials.copy()
    for col in _FLOAT_COLUMNS:
        if col not in trials.columns:
            trials[col] = np.nan
    for col in _TEXT_COLUMNS:
        if col not in trials.columns:
            trials[col] = None
    trials["status"] = trials["status"].fillna("ok").astype(str)
    trials["cell_id"] = trials["cell_id"].astype(str)
    # note: a resumed study may have written a trial twice; the last row wins
    return trials.drop_duplicates(list(TRIAL_KEY), keep="last").reset_index(drop=True)


def _normalise_curves(curves: pd.DataFrame) -> pd.DataFrame:
    curves = curves.copy()
    curves["cell_id"] = curves["cell_id"].astype(str)
    for col in _CURVE_COLUMNS:
        if col not in curves.columns:
            curves[col] = np.nan
    if "training_run" not in curves.columns:
        curves["training_run"] = None
    curves = curves.drop_duplicates([*TRIAL_KEY, "epoch"], keep="last")
    return curves.sort_values([*TRIAL_KEY, "epoch"]).reset_index(drop=True)


def _check_metric(metric: str, trials: pd.DataFrame, curves: pd.DataFrame) -> None:
    if metric in curves.columns or f"final_{metric}" in trials.columns:
        return
    known = sorted(c for c in curves.columns if c.startswith(("val_", "train_")))
    known += sorted(c[len("final_") :] for c in trials.columns if c.startswith("final_"))
    raise AnalysisInputError(
        f"unknown metric {metric!r}; known: {', '.join(dict.fromkeys(known)) or 'none'}"
    )


def load(location: str | Path, metric: str = "val_iou", params: Params = DEFAULT_PARAMS) -> RunData:
    """Read ``trials.parquet``, ``curves.parquet`` and ``grid.yaml`` of a study.

    ``location`` is a directory or a URI (``s3://...``, read through ``gridrun.storage``).
    Raises :class:`AnalysisInputError` when ``trials.parquet`` is missing or unreadable,
    or when ``metric`` is in neither table.
    """
    files, name = _open(location)
    if not files.exists(TRIALS_FILE):
        raise AnalysisInputError(f"no trials table at {location}/{TRIALS_FILE}")
    trials = _normalise_trials(_read_parquet(files, TRIALS_FILE))
    notes: list[str] = []
    if files.exists(CURVES_FILE):
        curves = _normalise_curves(_read_parquet(files, CURVES_FILE))
    else:
        curves = _normalise_curves(
            pd.DataFrame(columns=[*TRIAL_KEY, *FACTORS, "epoch", *_CURVE_COLUMNS])
        )
        notes.append(f"{CURVES_FILE} is missing: curve analyses are skipped.")
    _check_metric(metric, trials, curves)

    is_ok = trials["status"] == "ok"
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

    return RunData(
        location=str(location),
        name=name,
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


def final_metrics(data: RunData) -> pd.DataFrame:
    """One row per finished ``ok`` trial: factors, ``final`` and ``best`` metric, costs.

    ``final`` is the metric at the trial's last epoch and ``best`` its best epoch's
    value, both from the curves; without curves they fall back to the trials table's
    ``final_<metric>`` (and ``best_val_iou``). Trials whose final metric is null are
    dropped.
    """
    metric, ok = data.metric, data.ok
    cols = [
        *TRIAL_KEY, *FACTORS, "run_id", "training_run", "predictions", "steps", "train_time_s",
        "peak_mem_mb",
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
        if f"final_{metric}" in ok.columns:
            # note: a trial whose curve rows are missing still has its summary row
            fallback = ok.set_index(list(TRIAL_KEY))[f"final_{metric}"].astype(float)
            keys = pd.MultiIndex.from_frame(out[list(TRIAL_KEY)])
            out["final"] = out["final"].fillna(pd.Series(fallback.reindex(keys).to_numpy()))
    else:
        out["final"] = ok[f"final_{metric}"].to_numpy(dtype=float)
        has_best = metric == "val_iou"
        out["best"] = ok["best_val_iou"].to_numpy(dtype=float) if has_best else np.nan
        out["best_epoch"] = ok["best_epoch"].to_numpy(dtype=float) if has_best else np.nan
    out = out.dropna(subset=["final"])
    return out.sort_values(list(TRIAL_KEY)).reset_index(drop=True)
