"""Drawing helpers shared by the plot modules: panel grids, level selection, seed points,
shared y-limits, trivial-predictor lines and readable log axes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.baselines import Baselines


class _Panel(Protocol):
    @property
    def table(self) -> pd.DataFrame: ...  # per level: mean, ci_low, ci_high, ...


P = TypeVar("P", bound=_Panel)

__all__ = [
    "NO_INTERVAL_NOTE",
    "BaselineLine",
    "baseline_lines",
    "draw_baselines",
    "draw_levels",
    "level_axis",
    "level_values",
    "log_axis",
    "panel_grid",
    "shared_ylim",
    "PanelsInfo",
    "single_level_note",
    "spread_levels",
]

NO_INTERVAL_NOTE = "points: single seeds, where too few seeds for an interval"
BASELINE_COLOR = "0.35"
# note: a cost axis goes logarithmic only when its values span at least this factor;
# a log axis over a narrower range can show a single labelled tick (1-2-5 ticks are
# at most 2.5 apart, so a span of 5 always holds two)
LOG_SPAN = 5.0


@dataclass(frozen=True)
class BaselineLine:
    """A trivial predictor's score on the plotted metric, drawn as a labelled dashed line."""

    name: str
    value: float
    metric: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.value:.3f}"


@dataclass(frozen=True)
class PanelsInfo(Generic[P]):
    """Panels that share one y-range: ``panels`` (iterated over by ``for``);
    ``single_level``: the factors with one level (and that level), named instead of drawn;
    ``ylim``: the y-range every panel shares; ``baselines``: the trivial scores drawn."""

    metric: str
    panels: list[P]
    single_level: dict[str, object]
    ylim: tuple[float, float]
    baselines: tuple[BaselineLine, ...] = ()

    def __iter__(self) -> Iterator[P]:
        return iter(self.panels)

    def __len__(self) -> int:
        return len(self.panels)

    @classmethod
    def of(
        cls,
        metric: str,
        panels: list[P],
        single_level: dict[str, object],
        levels: Iterable[tuple[pd.DataFrame, pd.DataFrame]],
        baselines: Baselines | None,
    ) -> PanelsInfo[P]:
        """Panels on one y-range: it spans what :func:`draw_levels` puts on the axis for
        each (table, seeds) in ``levels``, and the trivial predictors' scores on ``metric``."""
        lines = baseline_lines(baselines, metric)
        values = [v for table, seeds in levels for v in level_values(table, seeds)]
        return cls(metric, panels, single_level, shared_ylim(values, lines), lines)

    @property
    def single_level_text(self) -> str:
        return single_level_note(self.single_level)

    def title(self, text: str) -> str:
        """``text`` and the notes of a panel figure: seeds drawn as points where a level has
        too few for an interval, the factors held at one level, the dashed trivial scores."""
        if any(p.table["ci_low"].isna().any() for p in self.panels):
            text += f"\n{NO_INTERVAL_NOTE}"
        if self.single_level:
            text += f"\n{self.single_level_text}"
        if self.baselines:
            text += "\ndashed: trivial predictors' scores"
        return text


def baseline_lines(baselines: Baselines | None, metric: str) -> tuple[BaselineLine, ...]:
    """Every trivial predictor's score on ``metric``, lowest first; none without baselines.

    A ``train_`` metric is given the ``val_`` score: the trivial predictors are scored on
    the validation set only, and a learning-curve panel draws both series against it.
    """
    if baselines is None:
        return ()
    column = "val_" + metric.removeprefix("train_") if metric.startswith("train_") else metric
    scores = baselines.scores(column)
    lines = [BaselineLine(name, value, column) for name, value in scores.items()]
    return tuple(sorted(lines, key=lambda line: (line.value, line.name)))


def shared_ylim(
    values: Iterable[float], lines: Iterable[BaselineLine] = (), pad: float = 0.05
) -> tuple[float, float]:
    """One y-range for every panel of a figure: the finite ``values`` and the baseline
    scores, widened by ``pad`` of their span on each side (by 0.01 when they coincide)."""
    every = np.array([*values, *(line.value for line in lines)], dtype=float)
    every = every[np.isfinite(every)]
    if not len(every):
        return 0.0, 1.0
    lo, hi = float(every.min()), float(every.max())
    margin = pad * (hi - lo) if hi > lo else 0.01
    return lo - margin, hi + margin


def single_level_note(levels: dict[str, object]) -> str:
    """``batch_size has one level (4): not shown`` for every factor in ``levels``."""
    return "; ".join(f"{f} has one level ({v}): not shown" for f, v in levels.items())


def draw_baselines(ax: Axes, lines: Iterable[BaselineLine], suffix: str = "") -> None:
    """Dashed horizontal lines at the trivial scores, each labelled at the right edge
    (where rising curves have left the trivial scores behind).

    Call it after the y-limits are set: a label goes below its line when the line above
    it is too close for both labels to fit.
    """
    lines = sorted(lines, key=lambda line: line.value)
    lo, hi = ax.get_ylim()
    crowded = 0.07 * abs(hi - lo)
    for i, line in enumerate(lines):
        ax.axhline(line.value, ls="--", lw=0.9, color=BASELINE_COLOR, zorder=1)
        above_free = i + 1 == len(lines) or lines[i + 1].value - line.value > crowded
        ax.text(
            0.99, line.value, line.label + suffix, transform=ax.get_yaxis_transform(),
            fontsize=6.5, color=BASELINE_COLOR, ha="right", va="bottom" if above_free else "top",
        )  # fmt: skip


def log_axis(ax: Axes, values: Iterable[float], axis: str = "x") -> bool:
    """Put ``axis`` on a log scale when the positive ``values`` span at least
    :data:`LOG_SPAN`, with plain-number labels at 1, 2 and 5 of each decade (2, 5, 10,
    20, 50; decades only past 2.5 decades) and unlabelled minor ticks; returns whether
    the axis went logarithmic."""
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if not len(v) or v.min() <= 0 or v.max() / v.min() < LOG_SPAN:
        return False
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    # note: over more than two and a half decades 1-2-5 labels crowd; decades alone do not
    subs = (1.0,) if np.log10(v.max() / v.min()) > 2.5 else (1.0, 2.0, 5.0)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    target.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10) * 1.0))
    target.set_minor_formatter(NullFormatter())
    return True


def panel_grid(n: int, cols: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``n`` visible panels, ``cols`` to a row."""
    cols = max(1, min(n, cols))
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def level_axis(ax: Axes, levels: list, label: str, info: PanelsInfo) -> None:
    """The x axis of a panel drawn by :func:`draw_levels` (ticks at 0, 1, ... named by the
    sorted ``levels``), the figure's shared y-range and its trivial-predictor lines."""
    ax.set_xticks(range(len(levels)), [str(v) for v in levels], fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylim(*info.ylim)
    draw_baselines(ax, info.baselines)


def spread_levels(levels: list, limit: int) -> list:
    """At most ``limit`` of the sorted ``levels``, evenly spread, first and last kept."""
    if len(levels) <= limit:
        return list(levels)
    picks = np.unique(np.round(np.linspace(0, len(levels) - 1, limit)).astype(int))
    return [levels[i] for i in picks]


def level_values(table: pd.DataFrame, seeds: pd.DataFrame) -> list[float]:
    """What :func:`draw_levels` puts on the y axis: means and bounds, or the seed points."""
    bounds = [*table["ci_low"], *table["ci_high"]] if table["ci_low"].notna().all() else []
    points = [] if table["ci_low"].notna().all() else list(seeds["value"])
    return [*table["mean"], *bounds, *points]


def draw_levels(
    ax: Axes,
    table: pd.DataFrame,
    seeds: pd.DataFrame,
    x: str,
    positions: dict,
    color,
    label: str | None = None,
) -> None:
    """Mean per level with its interval as a band, or, where a level has no interval
    (too few seeds), the seeds themselves as points."""
    t = table.sort_values(x)
    xs = t[x].map(positions).to_numpy(float)
    ax.plot(xs, t["mean"], marker="o", ms=4, color=color, label=label)
    if t["ci_low"].notna().all():
        ax.fill_between(xs, t["ci_low"], t["ci_high"], color=color, alpha=0.2, lw=0)
    else:
        ax.scatter(seeds[x].map(positions), seeds["value"], s=18, color=color, alpha=0.7, lw=0)
