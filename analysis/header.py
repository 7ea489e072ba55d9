"""The facts a report's header states about a study: grid, data, evaluation, model,
learning rate, hardware, time, trial counts. Read from ``grid.yaml``, ``baselines.json``
and the trials table; unknown facts are left out, never guessed."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.batch import lr_text
from analysis.load import FACTORS, StudyData
from gridrun.layout import GROUPED_KEY, RENAMED_KEYS, factor_names

__all__ = ["devices", "study_facts"]


def _levels(grid: dict[str, Any], trials: pd.DataFrame) -> str:
    factors = grid.get("factors") or {f: sorted(trials[f].dropna().unique()) for f in FACTORS}
    levels = {k: list(v) for k, v in factors.items() if k != GROUPED_KEY}
    # note: levels set together ({batch_size: 8, train.lr: 0.001}) are listed per factor
    for group in factors.get(GROUPED_KEY) or []:
        for k, v in group.items():
            known = levels.setdefault(k, [])
            if v not in known:
                known.append(v)
    names = factor_names(factors)
    return "; ".join(f"{f} {', '.join(str(v) for v in levels.get(f, []))}" for f in names)


def _data(grid: dict[str, Any]) -> str | None:
    data = grid.get("data")
    if not isinstance(data, dict):
        return None
    parts = [str(data.get("source", "?"))]
    if data.get("path"):
        parts.append(str(data["path"]))
    classes = data.get("num_classes")
    if classes is not None:
        parts.append("binary" if classes == 1 else f"{classes} classes")
    return ", ".join(parts)


def _evaluation(data: StudyData) -> str | None:
    """Where every cell is scored: the split sizes, the resolution and the class shares."""
    grid_data = data.grid.get("data") if isinstance(data.grid.get("data"), dict) else {}
    base = data.baselines
    size = base.eval_size if base and base.eval_size else grid_data.get("eval_size")
    if size is None and isinstance(data.grid.get("factors"), dict):
        size = max(data.grid["factors"].get("image_size") or [0]) or None
    parts = []
    if base and "val" in base.splits:
        val = base.splits["val"]
        text = f"{val.images} validation images"
        shares = val.class_shares
        if len(shares) == 2:
            text += f" ({shares[1]:.0%} foreground pixels)"
        parts.append(text)
    elif grid_data.get("val_size"):
        parts.append(f"{grid_data['val_size']} validation images")
    if base and "test" in base.splits:
        parts.append(f"{base.splits['test'].images} test images (never selected on)")
    if size:
        parts.append(f"scored at {size} px")
    return ", ".join(parts) or None


def _model(grid: dict[str, Any]) -> str | None:
    model, train = grid.get("model"), grid.get("train")
    if not isinstance(model, dict):
        return None
    # a model by name, `library: smp` or the user's `target`
    key = next((k for k in ("name", "library", "target") if k in model), "name")
    options = ", ".join(f"{k} {v}" for k, v in model.items() if k != key)
    text = f"{model.get(key, '?')}" + (f" ({options})" if options else "")
    if isinstance(train, dict):
        text += f"; {train.get('optimizer', '?')}, {train.get('loss', '?')} loss"
    return text


def devices(trials: pd.DataFrame) -> list[str]:
    """The devices the trials actually trained on, as recorded (empty when not recorded)."""
    if "device" not in trials.columns:
        return []
    return sorted(str(d) for d in trials["device"].dropna().unique())


def _hardware(grid: dict[str, Any], trials: pd.DataFrame) -> str | None:
    parts = []
    used = devices(trials)
    parts.append(", ".join(used) if used else "device not recorded")
    res = grid.get("resources")
    if isinstance(res, dict):
        old = next(o for (_, o), new in RENAMED_KEYS.items() if new == "workers_per_unit")
        workers = res.get("workers_per_unit", res.get(old, 1))  # an older study's grid.yaml
        parts.append(f"{workers} worker(s) per training run")
    nodes = trials["node_id"].dropna().nunique() or trials["node_ip"].dropna().nunique()
    if nodes:
        parts.append(f"{nodes} node(s)")
    peak = trials["peak_mem_mb"].max()
    if pd.notna(peak):
        gpu_only = bool(used) and all(d.startswith("cuda") for d in used)
        what = "peak GPU memory allocated" if gpu_only else "peak process memory (RSS)"
        parts.append(f"{what} {peak:.0f} MB")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _time(trials: pd.DataFrame) -> str | None:
    parts = []
    if {"started_at", "finished_at"} <= set(trials.columns):
        start = pd.to_datetime(trials["started_at"], utc=True, errors="coerce").min()
        end = pd.to_datetime(trials["finished_at"], utc=True, errors="coerce").max()
        if pd.notna(start) and pd.notna(end):
            parts.append(f"{_duration((end - start).total_seconds())} wall")
    total = trials["train_time_s"].sum(min_count=1)
    if pd.notna(total):
        parts.append(f"{_duration(total)} of training summed over trials")
    return ", ".join(parts) or None


def study_facts(data: StudyData, cells: int, seeds: int) -> list[tuple[str, str]]:
    """(label, value) pairs for the header, known facts only."""
    grid, trials = data.grid, data.trials
    counts = trials["status"].value_counts()
    status = ", ".join(f"{n} {s}" for s, n in counts.items())
    if len(data.running):
        status += f", {len(data.running)} running"
    facts = [
        ("grid", str(grid.get("name", data.name))),
        ("study", data.location),
        ("metric", data.metric),
        ("data", _data(grid)),
        ("evaluation", _evaluation(data)),
        ("model", _model(grid)),
        ("learning rate", lr_text(grid) if isinstance(grid.get("train"), dict) else None),
        ("hardware", _hardware(grid, trials)),
        ("time", _time(trials)),
        ("trials", status or "none"),
        ("cells", f"{cells} cells × up to {seeds} seeds"),
        ("factors", _levels(grid, trials)),
    ]
    return [(k, v) for k, v in facts if v]
