"""Read a run directory's tables and split them into what the analyses may use.

Works on a finished run, a run still in progress (only finished trials have a
row in ``trials.parquet``; running trials have partial curves), and on
hand-written tables that hold only some of the columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "FACTORS",
    "AnalysisInputError",
    "RunData",
    "final_metrics",
    "higher_is_better",
    "load_run",
    "varying_factors",
]

FACTORS: tuple[str, ...] = ("image_size", "dataset_size", "epochs", "batch_size")
TRIAL_KEY: tuple[str, str] = ("cell_id", "seed")

_TRIAL_COLUMNS: dict[str, str] = {
    "status": "str",
    "error": "str",
    "final_val_iou": "float",
    "final_train_iou": "float",
    "final_val_loss": "float",
    "final_train_loss": "float",
    "best_val_iou": "float",
    "best_epoch": "float",
    "steps": "float",
    "train_time_s": "float",
    "peak_mem_mb": "float",
    "run_id": "str",
}
_CURVE_COLUMNS: tuple[str, ...] = ("train_loss", "train_iou", "val_loss", "val_iou")


class AnalysisInputError(ValueError):
    """Input a user can fix: a missing or unreadable table, an unknown metric."""


@dataclass
class RunData:
    """A run's tables, split into the trials the fits use and the ones they leave out.

    ``ok`` holds the finished trials with status ``ok``; ``curves`` only their
    epochs. ``excluded`` holds trials that failed, diverged or were infeasible,
    ``running`` the (cell_id, seed) pairs that have curves but no trial row yet.
    """

    run_dir: Path
    metric: str
    trials: pd.DataFrame
    ok: pd.DataFrame
    excluded: pd.DataFrame
    curves: pd.DataFrame
    running: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def higher_is_better(metric: str) -> bool:
    """Losses fall as training improves; every other metric (IoU, Dice, ...) rises."""
    return "loss" not in metric


def varying_factors(df: pd.DataFrame) -> list[str]:
    """The factors with at least two levels in ``df``, in canonical order."""
    return [f for f in FACTORS if f in df.columns and df[f].nunique(dropna=True) >= 2]


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader error means the same to the user
        raise AnalysisInputError(f"cannot read {path}: {exc}") from exc


def _normalise_trials(trials: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in (*TRIAL_KEY, *FACTORS) if c not in trials.columns]
    if missing:
        raise AnalysisInputError(f"{path} lacks column(s) {', '.join(missing)}")
    trials = trials.copy()
    for col, kind in _TRIAL_COLUMNS.items():
        if col not in trials.columns:
            trials[col] = np.nan if kind == "float" else None
    trials["status"] = trials["status"].fillna("ok").astype(str)
    trials["cell_id"] = trials["cell_id"].astype(str)
    # note: a resumed run may have written a trial twice; the last row wins
    return trials.drop_duplicates(list(TRIAL_KEY), keep="last").reset_index(drop=True)


def _normalise_curves(curves: pd.DataFrame) -> pd.DataFrame:
    curves = curves.copy()
    curves["cell_id"] = curves["cell_id"].astype(str)
    for col in _CURVE_COLUMNS:
        if col not in curves.columns:
            curves[col] = np.nan
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


def load_run(run_dir: Path, metric: str = "val_iou") -> RunData:
    """Read ``trials.parquet`` and ``curves.parquet`` from ``run_dir``.

    Raises :class:`AnalysisInputError` when ``trials.parquet`` is missing or
    unreadable, or when ``metric`` is in neither table.
    """
    run_dir = Path(run_dir)
    trials_path = run_dir / "trials.parquet"
    if not trials_path.is_file():
        raise AnalysisInputError(f"no trials table at {trials_path}")
    trials = _normalise_trials(_read_parquet(trials_path), trials_path)
    notes: list[str] = []

    curves_path = run_dir / "curves.parquet"
    if curves_path.is_file():
        curves = _normalise_curves(_read_parquet(curves_path))
    else:
        curves = pd.DataFrame(columns=[*TRIAL_KEY, *FACTORS, "epoch", *_CURVE_COLUMNS])
        notes.append(f"{curves_path.name} is missing: curve analyses are skipped.")
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
        run_dir=run_dir,
        metric=metric,
        trials=trials,
        ok=ok,
        excluded=excluded,
        curves=ok_curves,
        running=running.reset_index(drop=True),
        notes=notes,
    )


def final_metrics(data: RunData) -> pd.DataFrame:
    """One row per finished ``ok`` trial: factors, ``final`` and ``best`` metric, costs.

    ``final`` is the metric at the trial's last epoch and ``best`` its best
    epoch's value, both from the curves; without curves they fall back to the
    trials table's ``final_<metric>`` (and ``best_val_iou``). Trials whose
    final metric is null are dropped.
    """
    metric, ok = data.metric, data.ok
    cols = [*TRIAL_KEY, *FACTORS, "run_id", "steps", "train_time_s", "peak_mem_mb"]
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
