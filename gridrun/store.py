"""The study directory: the resolved grid, the two Parquet tables, the lock that keeps
one driver writing, and resume bookkeeping. Every file goes through `Storage`, whose
writes are atomic, so a reader (or a crash) never sees half a table.

The tables grow by appending: each finished trial's rows are a new part of each table,
parts merge as they pile up, and `compact` folds them into the two tables."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from gridrun.layout import (
    BASELINES_FILE,
    BEST_EPOCH_COLUMN,
    BEST_METRIC,
    CURVE_COLUMNS,
    CURVES_FILE,
    CURVES_PARTS_DIR,
    FINAL_METRICS,
    GRID_FILE,
    LOCK_FILE,
    PROGRESS_FILE,
    TRIAL_COLUMNS,
    TRIAL_ID,
    TRIAL_KEY,
    TRIALS_FILE,
    TRIALS_PARTS_DIR,
    Progress,
    Status,
    best_column,
    final_column,
    num_labels,
    parse_part_name,
    part_name,
)
from gridrun.records import EpochReport, TrialRow
from gridrun.runs import TrialInfo, training_runs
from gridrun.storage import (
    Storage,
    combine_parts,
    latest_rows,
    list_parts,
    owned_rows,
    read_arrow,
    read_arrow_or_none,
    read_tables,
    table_frame,
    write_arrow,
)

if TYPE_CHECKING:
    from gridrun.data import SplitTruth

__all__ = [
    "Results",
    "StudyDirError",
    "StudyLock",
    "StudyState",
    "baselines_record",
    "claim_study",
    "compact",
    "study_state",
    "summarize_trial",
    "write_baselines",
]

# a row as pandas gets it: column -> value
_Row = dict[str, Any]


class StudyDirError(ValueError):
    """The study directory cannot be used as asked (the message names it)."""


def _ordered(rows: list[_Row], leading: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in leading:
        if column not in frame:
            frame[column] = None
    extra = sorted(c for c in frame.columns if c not in leading)
    return frame[leading + extra]


def _nan_low(value: Any) -> float:
    return float("-inf") if value is None or value != value else float(value)


def _curve_row(trial: TrialInfo, report: EpochReport) -> _Row:
    """The report's curves.parquet row: the trial's identity, then the epoch's values
    (an identity column wins over a reported value of the same name: `lr` is the trial's)."""
    identity = trial.row()
    reported = {
        "epoch": report.epoch, **report.metrics, "world_size": report.world_size,
        "node_id": report.worker.node_id, "worker_pid": report.worker.worker_pid,
    }  # fmt: skip
    return {**identity, **{k: v for k, v in reported.items() if k not in identity}}


def summarize_trial(
    trial: TrialInfo, epochs: Sequence[EpochReport], status: Status, error: str | None
) -> _Row:
    """One trials.parquet row from a trial's epoch reports (up to its own epoch)."""
    row: _Row = {**trial.row(), "status": status.value, "error": error}
    if epochs:
        last = epochs[-1]
        best = max(epochs, key=lambda r: _nan_low(r.metrics.get(BEST_METRIC)))
        row.update({final_column(m): last.metrics.get(m) for m in FINAL_METRICS})
        row[best_column(BEST_METRIC)] = best.metrics.get(BEST_METRIC)
        row[BEST_EPOCH_COLUMN] = best.epoch
        row.update(
            steps=last.metrics.get("step"),
            train_time_s=last.metrics.get("train_time_s"),
            peak_mem_mb=max(r.metrics.get("peak_mem_mb") or 0.0 for r in epochs),
            params=last.params,
            node_ip=last.worker.worker_ip,
            node_id=last.worker.node_id,
            device=last.device,
            predictions=last.predictions,
        )
    return row


class Results:
    """Rows of one study. Each finished trial's rows are appended as a part of both
    tables; parts merge as they pile up and `compact` folds them into the tables. Holds
    the finished trials' rows, never their epochs."""

    # note: MERGE_PARTS parts of one level merge into one part of the next, so a row is
    # rewritten once per level (a handful in a study of any size), not once per trial
    MERGE_PARTS = 32

    def __init__(self, study: Storage):
        self.study = study
        trials, _ = read_tables(study, curves=False)
        records = [] if trials is None else trials.to_dict("records")
        self.trials: dict[str, _Row] = {r[TRIAL_ID]: r for r in records}
        names = {n.rsplit("/", 1)[-1] for d in _PARTS_DIRS for n in list_parts(study, d)}
        self._parts = sorted(k for k in map(parse_part_name, names) if k is not None)
        self._next = max((number for number, _ in self._parts), default=0) + 1
        self._pending: dict[str, dict[int, EpochReport]] = {}
        self._started: dict[str, datetime] = {}

    def final_trial_ids(self) -> set[str]:
        """Trials with a final answer: a resumed run skips them and runs only the rest."""
        return {r for r, row in self.trials.items() if Status.parse(row["status"]).final}

    def status(self, trial_id: str) -> Status | None:
        """How trial `trial_id` ended; None while it has no row."""
        row = self.trials.get(trial_id)
        return None if row is None else Status.parse(row["status"])

    def start(self, trial_id: str) -> None:
        self._started.setdefault(trial_id, datetime.now(UTC))
        self._pending.setdefault(trial_id, {})

    def add_epoch(self, trial: TrialInfo, report: EpochReport) -> None:
        # note: keyed by epoch, so an epoch reported again after a restart is kept once
        self._pending.setdefault(trial.trial_id, {})[report.epoch] = report

    def pending(self, trial_id: str) -> bool:
        return trial_id in self._pending

    def finish(
        self,
        trial: TrialInfo,
        status: Status,
        error: str | None = None,
        checkpoint: str | None = None,
    ) -> TrialRow:
        epochs = [r for _, r in sorted(self._pending.pop(trial.trial_id, {}).items())]
        row = summarize_trial(trial, epochs, status, error)
        row["checkpoint"] = checkpoint
        row["started_at"] = self._started.pop(trial.trial_id, None) or datetime.now(UTC)
        row["finished_at"] = datetime.now(UTC)
        name = part_name(self._next, 0)
        curves = [_curve_row(trial, r) for r in epochs]
        # note: curves first. A trial is done once its row is in a trials part, so a
        # driver killed between the two writes leaves at worst a curves part no trial
        # row owns (readers leave it out), never a finished trial without its curve
        if curves:
            self.study.write_parquet(f"{CURVES_PARTS_DIR}/{name}", _ordered(curves, CURVE_COLUMNS))
        self.study.write_parquet(f"{TRIALS_PARTS_DIR}/{name}", _ordered([row], TRIAL_COLUMNS))
        self.trials[trial.trial_id] = row
        self._parts.append((self._next, 0))
        self._next += 1
        self._merge()
        return TrialRow(status, error, dict(row))

    def compact(self) -> None:
        """Fold every part into the two tables (`compact`)."""
        compact(self.study)
        self._parts = []

    def _merge(self) -> None:
        """While the newest MERGE_PARTS parts share a level, merge them into one part of
        the next level, named by the newest, so it applies after them."""
        while True:
            level = self._parts[-1][1]
            tail = list(itertools.takewhile(lambda p, lv=level: p[1] == lv, reversed(self._parts)))
            if len(tail) < self.MERGE_PARTS:
                return
            names = [part_name(*p) for p in reversed(tail)]
            merged = part_name(tail[0][0], level + 1)
            # note: source 0 is empty, so curve rows no trial row here owns are left out
            trials, curves = combine_parts(
                [None, *(read_arrow_or_none(self.study, f"{TRIALS_PARTS_DIR}/{n}") for n in names)],
                [None, *(read_arrow_or_none(self.study, f"{CURVES_PARTS_DIR}/{n}") for n in names)],
            )
            if curves is not None and curves.num_rows:
                write_arrow(self.study, f"{CURVES_PARTS_DIR}/{merged}", curves)
            if trials is not None:
                write_arrow(self.study, f"{TRIALS_PARTS_DIR}/{merged}", trials)
            _delete_parts(self.study, names)
            self._parts[-len(tail) :] = [(tail[0][0], level + 1)]


_PARTS_DIRS = (TRIALS_PARTS_DIR, CURVES_PARTS_DIR)


def _delete_parts(study: Storage, names: list[str]) -> None:
    # note: in the order they apply, each trials part before its curves part: what a
    # crash leaves is a suffix, whose rows the merged part or table holds too, and no
    # trials part whose curves part is gone
    for name in names:
        for directory in _PARTS_DIRS:
            study.delete(f"{directory}/{name}")


# note: curves compact a slice of trials at a time, about this many rows, so the driver
# never holds the whole table (800,000 rows for 10,000 trials of 80 epochs)
COMPACT_ROWS = 50_000


def compact(study: Storage) -> None:
    """Rewrite trials.parquet and curves.parquet with every part applied, then remove
    the parts, so a finished study is two tables pandas opens. Nothing to do without
    parts. Only the study's writer (the lock holder) may call this."""
    listed = {n.rsplit("/", 1)[-1] for d in _PARTS_DIRS for n in list_parts(study, d)}
    if not listed:
        return
    names = sorted(listed, key=parse_part_name)
    trial_rels = [TRIALS_FILE, *(f"{TRIALS_PARTS_DIR}/{n}" for n in names)]
    trials, owner = latest_rows([read_arrow_or_none(study, rel) for rel in trial_rels])
    # note: curves first, as in `Results.finish`
    _compact_curves(study, [CURVES_FILE, *(f"{CURVES_PARTS_DIR}/{n}" for n in names)], owner)
    if trials is not None:
        study.write_parquet(TRIALS_FILE, table_frame(trials, TRIAL_COLUMNS, list(TRIAL_KEY)))
    _delete_parts(study, names)
    for directory in _PARTS_DIRS:
        study.delete(directory)  # note: empty now; local disk keeps empty directories


def _compact_curves(study: Storage, rels: list[str], owner: pd.Series | None) -> None:
    """curves.parquet from `rels` (sources in order): each trial's owned rows, sorted by
    trial and epoch, written a slice of trials at a time."""
    key, order = list(TRIAL_KEY), [*TRIAL_KEY, "epoch"]
    schemas, rows = [], []
    for i, rel in enumerate(rels):
        try:
            parquet = pq.ParquetFile(io.BytesIO(study.read_bytes(rel)))
        except FileNotFoundError:
            continue
        schemas.append(parquet.schema_arrow.remove_metadata())
        keys = parquet.read(columns=key)
        owned = keys.filter(pa.array(owned_rows(keys, i, owner))).to_pandas()
        rows.append(owned.groupby(key, sort=False).size().rename("rows").reset_index())
        rows[-1]["source"] = i
    counts = pd.concat(rows).sort_values(key, ignore_index=True) if rows else None
    if counts is None or not len(counts):
        study.write_parquet(CURVES_FILE, pd.DataFrame(columns=CURVE_COLUMNS))
        return
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    names = [c for c in CURVE_COLUMNS if c in unified.names]
    names += sorted(c for c in unified.names if c not in CURVE_COLUMNS)
    schema = pa.schema([unified.field(c) for c in names])
    slices = (counts["rows"].cumsum() // COMPACT_ROWS).to_numpy()

    def write(stream: pa.NativeFile) -> None:
        with pq.ParquetWriter(stream, schema) as writer:
            for at in np.unique(slices):
                wanted = counts[slices == at]
                index = pd.MultiIndex.from_frame(wanted[key])
                pieces = []
                for i in wanted["source"].unique():
                    table = read_arrow(study, rels[i])
                    keys = pd.MultiIndex.from_frame(table.select(key).to_pandas())
                    keep = owned_rows(table, int(i), owner) & keys.isin(index)
                    pieces.append(_conform(table.filter(pa.array(keep)), schema))
                piece = pa.concat_tables(pieces).sort_by([(c, "ascending") for c in order])
                writer.write_table(piece)

    # note: straight to the temporary file, not through a buffer of the whole table
    study.write_streamed(CURVES_FILE, write)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns, in its order and types (missing ones null)."""
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=schema)


def _predictors(num_classes: int) -> dict[str, int]:
    """Trivial predictor name → the label it predicts at every pixel."""
    if num_classes == 1:
        return {"all background": 0, "all foreground": 1}
    return {f"all class {k}": k for k in range(num_classes)}


def baselines_record(
    splits: dict[str, SplitTruth], eval_size: int, num_classes: int, ignore_index: int | None
) -> dict[str, Any]:
    """baselines.json's content: each evaluated split's size and class pixels, and what
    each trivial predictor scores on every metric the curves record for that split
    (`val_iou`, ..., `test_iou`, ...; NaN as None), computed by the curves' own `scores`."""
    from gridrun.metrics import constant_scores

    predictors: dict[str, dict[str, float | None]] = {}
    for name, label in _predictors(num_classes).items():
        values: dict[str, float | None] = {}
        for split, truth in splits.items():
            got = constant_scores(list(truth.class_pixels), label, f"{split}_")
            values.update({k: v if math.isfinite(v) else None for k, v in got.items()})
        predictors[name] = values
    return {
        "eval_size": eval_size,
        "num_labels": num_labels(num_classes),
        "ignore_index": ignore_index,
        "splits": {
            split: {
                "images": truth.images,
                "class_pixels": list(truth.class_pixels),
                "ignored_pixels": truth.ignored_pixels,
            }
            for split, truth in splits.items()
        },
        "predictors": predictors,
    }


def write_baselines(study: Storage, record: dict[str, Any]) -> None:
    """Publish baselines.json (atomically; the same content again on a resume)."""
    study.write_text(BASELINES_FILE, json.dumps(record, indent=2) + "\n")


def _first_difference(old: Any, new: Any, key: str = "") -> str | None:
    """The dotted key of the first value that differs between two resolved grids."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            found = _first_difference(old.get(k), new.get(k), f"{key}.{k}" if key else k)
            if found:
                return found
        return None
    return None if old == new else key


def _grows(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """None if `new` only adds factor levels or seeds to `old`; else the first key that
    changes otherwise."""
    for name, levels in old["factors"].items():
        # note: a list, not a set: `grouped` holds mappings
        if not all(level in new["factors"].get(name, []) for level in levels):
            return f"factors.{name}"
    for name in new["factors"]:
        # note: the study's trials were not run at any of a new factor's levels
        if name not in old["factors"]:
            return f"factors.{name}"
    if not set(old["seeds"]) <= set(new["seeds"]):
        return "seeds"
    rest_old = {k: v for k, v in old.items() if k not in ("factors", "seeds")}
    rest_new = {k: v for k, v in new.items() if k not in ("factors", "seeds")}
    return _first_difference(rest_old, rest_new)


def claim_study(study: Storage, resolved_yaml: str) -> bool:
    """Create the study for this grid, resume it if it holds the same grid, or extend it
    if the new grid only adds levels or seeds. Returns True when it was extended."""
    study.check()
    if not study.exists(GRID_FILE):
        study.write_text(GRID_FILE, resolved_yaml)
        return False
    existing = study.read_text(GRID_FILE)
    if existing == resolved_yaml:
        return False
    from gridrun.spec import renamed_keys

    # note: a study written before a key was renamed reads under the new name
    old, new = renamed_keys(yaml.safe_load(existing), None), yaml.safe_load(resolved_yaml)
    if not study.exists(TRIALS_FILE) and not list_parts(study, TRIALS_PARTS_DIR):
        study.write_text(GRID_FILE, resolved_yaml)  # nothing ran yet: the new grid wins
        return False
    differs = _grows(old, new)
    if differs is not None:
        raise StudyDirError(
            f"{study}: holds the results of a different grid ({differs} differs; a grid may "
            "only add levels or seeds to a study); pass --out to choose another directory"
        )
    study.write_text(GRID_FILE, resolved_yaml)
    # note: a grid that only gained keys left at their defaults (a newer gridrun) resumes
    return old["factors"] != new["factors"] or old["seeds"] != new["seeds"]


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    started_at: str
    heartbeat: float

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}, started {self.started_at}"


class StudyLock:
    """One writing driver per study. The lock names its holder and is refreshed every
    HEARTBEAT_S; a lock whose process is gone (same host) or whose heartbeat is older
    than STALE_S (another host) is taken over. Readers never need it."""

    HEARTBEAT_S = 20.0
    STALE_S = 120.0

    def __init__(self, study: Storage):
        self.study = study
        self.me = LockHolder(
            socket.gethostname(), os.getpid(), datetime.now(UTC).isoformat(timespec="seconds"), 0
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        return json.dumps({**self.me.__dict__, "heartbeat": time.time()}).encode()

    def holder(self) -> LockHolder | None:
        try:
            return LockHolder(**json.loads(self.study.read_bytes(LOCK_FILE)))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def _alive(self, holder: LockHolder) -> bool:
        if holder.host == self.me.host:
            try:
                os.kill(holder.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return time.time() - holder.heartbeat < self.STALE_S

    def acquire(self) -> None:
        if not self.study.create_exclusive(LOCK_FILE, self._payload()):
            holder = self.holder()
            if holder is not None and holder.pid != self.me.pid and self._alive(holder):
                raise StudyDirError(
                    f"{self.study}: in use by another gridrun run ({holder.describe()}); "
                    "wait for it or stop it"
                )
            # note: the holder is gone; take the lock over
            self.study.write_bytes(LOCK_FILE, self._payload())
        self._thread = threading.Thread(target=self._beat, daemon=True, name="study-lock")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            holder = self.holder()
            if holder is None or (holder.host, holder.pid) == (self.me.host, self.me.pid):
                self.study.write_bytes(LOCK_FILE, self._payload())

    def release(self) -> None:
        self._stop.set()
        holder = self.holder()
        if holder is not None and (holder.host, holder.pid) == (self.me.host, self.me.pid):
            self.study.delete(LOCK_FILE)

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class StudyState:
    total: int
    ok: list[str]
    not_ok: dict[str, tuple[str, str | None]]
    missing: list[str]
    running: dict[str, int]  # trials training now (a live driver): their latest epoch
    lock: LockHolder | None
    seconds_per_step: float | None  # measured: training time per optimizer step
    steps_left: int
    # the levels of each setting varied as a factor (train.lr: [...]), crossed or grouped
    settings: dict[str, list[Any]] = field(default_factory=dict)


def study_state(study: Storage) -> StudyState:
    from gridrun.spec import GridError, parse_grid

    if not study.exists(GRID_FILE):
        raise StudyDirError(f"{study}: not a gridrun study (no {GRID_FILE})")
    try:
        grid = parse_grid(yaml.safe_load(study.read_text(GRID_FILE)), str(study))
    except GridError as exc:
        raise StudyDirError(str(exc)) from None
    trials = grid.trials()
    table = read_tables(study, curves=False)[0]
    table = pd.DataFrame() if table is None else table
    rows = {r[TRIAL_ID]: r for r in table.to_dict("records")}
    expected = [t.trial_id for t in trials]
    missing = [t for t in trials if t.trial_id not in rows]
    lock = StudyLock(study).holder()
    running: dict[str, int] = {}
    if lock is not None and study.exists(PROGRESS_FILE):
        progress = Progress.from_json(study.read_text(PROGRESS_FILE))
        running = {r: e for r, e in progress.running.items() if r not in rows}
    # note: what is left to train, with cells differing only in epochs sharing a run
    steps_left = sum(r.steps for r in training_runs(grid, missing))
    rate = None
    if len(table) and {"train_time_s", "steps"} <= set(table.columns):
        ok = table[(table["status"] == Status.OK) & (table["steps"] > 0)]
        if len(ok):
            rate = float(ok["train_time_s"].sum() / ok["steps"].sum())
    return StudyState(
        total=len(expected),
        ok=[r for r in expected if r in rows and Status.parse(rows[r]["status"]) is Status.OK],
        # note: pandas reads a missing error back as NaN once any row holds one
        not_ok={r: (rows[r]["status"], rows[r]["error"] if pd.notna(rows[r]["error"]) else None)
                for r in expected
                if r in rows and Status.parse(rows[r]["status"]) is not Status.OK},
        missing=[t.trial_id for t in missing if t.trial_id not in running],
        running=running,
        lock=lock,
        seconds_per_step=rate,
        steps_left=steps_left,
        settings=grid.factors.setting_levels(),
    )  # fmt: skip
