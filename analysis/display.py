"""Tables as the report page shows them: intervals as one rounded string, the columns a
reader compares, costs named. The CSVs beside the page keep every column at full precision.
"""

from __future__ import annotations

import pandas as pd

from analysis.recommend import COST_NAMES
from analysis.stats import format_interval

__all__ = [
    "display_cells",
    "display_claims",
    "display_importance",
    "display_recommendations",
    "display_scaling",
]


def _with_interval(frame: pd.DataFrame, prefix: str, name: str) -> pd.DataFrame:
    """``frame`` with column ``name``: ``<prefix>mean [ci_low, ci_high]`` as rounded text."""
    values = [
        format_interval(m, lo, hi)
        for m, lo, hi in zip(
            frame[f"{prefix}mean"], frame[f"{prefix}ci_low"], frame[f"{prefix}ci_high"], strict=True
        )
    ]
    return frame.assign(**{name: values})


def display_recommendations(rec: pd.DataFrame, metric: str) -> pd.DataFrame:
    if rec.empty:
        return rec
    out = _with_interval(rec, "", metric)
    out["by"] = out["by"].map(COST_NAMES)
    out["best"] = [
        f"{c} ({m:.3f})" for c, m in zip(out["best_cell_id"], out["best_mean"], strict=True)
    ]
    out["qualifying"] = [
        f"{q} of {n}" for q, n in zip(out["qualifying"], out["cells"], strict=True)
    ]
    cols = ["image_size", "by", "cell_id", metric, "best", "gap", "p_worse", "cost",
            "cost_ratio", "qualifying", "separable"]  # fmt: skip
    return out[cols]


def display_cells(cells: pd.DataFrame, metric: str, device_memory: bool = False) -> pd.DataFrame:
    """The columns a reader compares; the factor levels are in the cell id (and the CSV).
    Per-class IoU columns are named for binary masks (background, foreground, mean);
    peak memory is named for what it measured (``device_memory``: the GPU's allocator,
    else the process's resident set)."""
    out = _with_interval(cells, "final_", f"final {metric}")
    out = _with_interval(out, "best_", "at best epoch")
    cols = ["cell_id", "n", f"final {metric}", "at best epoch", "best_epoch"]
    if "test_at_best_mean" in out.columns:
        out = _with_interval(out, "test_at_best_", "test at best epoch")
        cols.append("test at best epoch")
    split = "test" if metric.startswith("test_") else "val"
    classes = sorted(
        (c for c in out.columns if c.startswith(f"{split}_iou_c")),
        key=lambda c: int(c.rsplit("c", 1)[1]),
    )
    names = {f"{split}_iou_c0": "IoU background", f"{split}_iou_c1": "IoU foreground"}
    binary = len(classes) == 2
    for c in classes:
        name = names[c] if binary else f"IoU class {c.rsplit('c', 1)[1]}"
        out[name] = out[c].round(3)
        cols.append(name)
    if f"{split}_miou" in out.columns:
        out["mIoU"] = out[f"{split}_miou"].round(3)
        cols.append("mIoU")
    memory = "peak GPU MB" if device_memory else "peak RSS MB"
    out[memory] = out["peak_mem_mb"]
    cols += ["collapsed", "steps", "train_time_s", memory]
    return out[[c for c in cols if c in out.columns]]


def display_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: what it says, its verdict, the test, the numbers, what would test it."""
    cols = ["claim", "source", "verdict", "test", "evidence", "needed"]
    return claims[[c for c in cols if c in claims.columns]]


def display_scaling(scaling: pd.DataFrame) -> pd.DataFrame:
    sizes = [
        f"{lo:.0f}–{hi:.0f} ({n})"
        for lo, hi, n in zip(
            scaling["min_size"], scaling["max_size"], scaling["n_sizes"], strict=True
        )
    ]
    cols = ["image_size", "epochs", "batch_size", "sizes", "exponent", "r2", "rmse",
            "gain_last_doubling", "doubling_below_1pt_at", "threshold"]  # fmt: skip
    return scaling.assign(sizes=sizes)[cols]


def display_importance(importance: pd.DataFrame) -> pd.DataFrame:
    if importance.empty:
        return importance
    out = importance.assign(
        omega_sq=[
            format_interval(m, lo, hi, default=3)
            for m, lo, hi in zip(
                importance["omega_sq"], importance["ci_low"], importance["ci_high"], strict=True
            )
        ]
    )
    return out[["term", "omega_sq", "p_value"]].rename(columns={"omega_sq": "ω² [interval]"})
