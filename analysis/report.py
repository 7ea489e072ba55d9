"""``gridrun report``: a study in, a report with tables, plots and one HTML page out.

Written under ``DIR/report/`` (or ``to``, a local directory or a URI): ``index.html``
(self-contained, images embedded), ``tables/*.csv`` and ``plots/*.png``. Every file is
written atomically through ``gridrun.storage`` (a temporary file published in place),
on a local disk and on object storage alike.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.batch import (
    batch_rule,
    batch_sentences,
    get_steps_info,
    get_steps_plot,
    lr_text,
)
from analysis.collapse import collapse_sentences
from analysis.critical_batch import critical_batch_sentences
from analysis.display import (
    display_cells,
    display_claims,
    display_importance,
    display_recommendations,
    display_scaling,
)
from analysis.edges import edge_sentences
from analysis.findings import ReportTables, compute_tables
from analysis.header import study_facts
from analysis.html import Image, Section, Table, render_page
from analysis.importance import get_importance_info, get_importance_plot
from analysis.interactions import get_heatmap_plot, get_interaction_info, get_interaction_plot
from analysis.isolation import get_isolation_plot, isolation_rule, isolation_sentences
from analysis.learning_curves import get_learning_curves_info, get_learning_curves_plot
from analysis.load import FACTORS, StudyData, load, study_storage
from analysis.main_effects import get_main_effects_info, get_main_effects_plot
from analysis.overlays import get_overlay_info, get_overlay_plot, grid_ignore_index
from analysis.parallel import get_parallel_info, get_parallel_plot
from analysis.params import DEFAULT_PARAMS, Params
from analysis.pareto import (
    get_pareto_info,
    get_pareto_plot,
    memory_is_device_memory,
    memory_note,
    pareto_costs,
)
from analysis.scaling import MIN_SIZES
from analysis.stats import higher_is_better
from analysis.summary import lead_count, summarize
from gridrun.layout import DEFAULT_METRIC, OVERLAY_IMAGES, REPORT_DIR

__all__ = ["Report", "write_report"]

DPI = 100


@dataclass
class Report:
    """What :func:`write_report` wrote (local paths, or URIs on object storage) and the
    findings to print."""

    html_path: Path | str
    findings: list[str]
    tables: dict[str, Path | str] = field(default_factory=dict)
    plots: dict[str, Path | str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Sink:
    """Where the report goes: ``to`` (a directory or a URI), or the study's report/.
    Local files are named by the path as the user gave it, other files by their URI."""

    def __init__(self, data: StudyData, to: str | Path | None):
        self.root: Path | None
        if to is None:
            self.storage = data.files.child(REPORT_DIR)
            self.root = None if data.local_dir is None else data.local_dir / REPORT_DIR
        else:
            self.storage = study_storage(to)
            local = self.storage.local_path()
            self.root = Path(to).expanduser() if local and "://" not in str(to) else local
        self.written: set[str] = set()

    def write(self, rel: str, data: bytes) -> Path | str:
        self.storage.write_bytes(rel, data)
        self.written.add(rel)
        return self.storage.join(rel) if self.root is None else self.root / rel

    def remove_stale_plots(self) -> None:
        for name in self.storage.list("plots"):
            if name.endswith(".png") and f"plots/{name}" not in self.written:
                self.storage.delete(f"plots/{name}")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    return buffer.getvalue()


def _priority(tables: ReportTables) -> list[str]:
    """Cells worth a learning-curve panel first: the best, the worst, the one that loses
    most to overfitting, the recommended ones, each image size's best, then by rank."""
    cells, by_cell = tables.cells["cell_id"], tables.curves_by_cell
    picks = [*cells.head(1), *cells.tail(1)]
    if len(by_cell) and by_cell["best_minus_last"].notna().any():
        picks.append(by_cell.loc[by_cell["best_minus_last"].idxmax(), "cell_id"])
    picks += list(tables.recommendations["cell_id"])
    picks += list(tables.cells.groupby("image_size", sort=False).head(1)["cell_id"])
    return list(dict.fromkeys([*picks, *cells]))


def _overlay_picks(tables: ReportTables) -> list[tuple[str, str]]:
    cells, rec = tables.cells, tables.recommendations
    picks = [("best", cells["cell_id"].iloc[0])] if len(cells) else []
    if len(rec):
        top = rec[rec["image_size"] == rec["image_size"].max()].iloc[0]
        picks.append(("recommended", top["cell_id"]))
    if len(cells) > 1:
        picks.append(("worst", cells["cell_id"].iloc[-1]))
    seen: set[str] = set()
    return [(label, c) for label, c in picks if not (c in seen or seen.add(c))]


@dataclass(frozen=True)
class _Job:
    """A figure to draw: ``draw`` builds it from what the report has computed."""

    name: str
    draw: Callable[[], Figure]
    caption: str


# note: the figures of the report being written, for the forked processes that draw them
# (a fork inherits them; nothing is pickled on the way in, only the PNGs come back)
_JOBS: list[_Job] = []


def _draw(index: int) -> bytes:
    return _png(_JOBS[index].draw())


def _render(jobs: list[_Job]) -> dict[str, Image]:
    """Draw the figures, in forked processes, one per core, where that is safe (see
    :func:`_forkable`), else here; the same PNGs either way.

    note: drawing is most of a large report's time (12 of 26 s at 10,000 cells) and the
    figures are independent of one another."""
    workers = min(len(jobs), _cores())
    if workers < 2 or not _forkable():
        pngs = [_png(job.draw()) for job in jobs]
    else:
        _JOBS[:] = jobs
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                pngs = pool.map(_draw, range(len(jobs)), chunksize=1)
        finally:
            _JOBS.clear()
    return {j.name: Image(j.name, png, j.caption) for j, png in zip(jobs, pngs, strict=True)}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _forkable() -> bool:
    """A fork is safe: the platform has it (not macOS, where system frameworks are not
    fork-safe) and this process is not a Ray driver or worker (its connections and
    threads do not survive one)."""
    if sys.platform == "darwin" or "fork" not in multiprocessing.get_all_start_methods():
        return False
    ray = sys.modules.get("ray")
    return ray is None or not ray.is_initialized()


def _plots(data: StudyData, tables: ReportTables, overlays: bool) -> tuple[dict, dict]:
    """Every figure the data allow as (name → Image), and per-section notes."""
    metric, params, base = data.metric, data.params, data.baselines
    curve_metric = metric if metric in data.curves.columns else DEFAULT_METRIC
    notes: dict[str, list[str]] = {
        "factors": [], "batch": [], "curves": [], "cost": [], "predictions": []
    }  # fmt: skip

    jobs: list[_Job] = []

    def add(name: str, draw: Callable[[], Figure], caption: str) -> None:
        jobs.append(_Job(name, draw, caption))

    trivial = "; dashed: what trivial predictors score" if base is not None else ""
    if len(tables.importance):
        info = get_importance_info(tables.importance)
        add(
            "importance",
            partial(get_importance_plot, info, metric, len(tables.importance), params),
            "Share of the variance of the final metric each factor and interaction explains.",
        )
    if len(tables.final):
        add(
            "main_effects",
            partial(
                get_main_effects_plot,
                get_main_effects_info(data.final, params, base, metric, data.factors),
                metric,
            ),
            "Each factor's levels, averaged over the other factors within each seed; one "
            f"y-axis for all panels{trivial}.",
        )
    pairs = get_interaction_info(data.final, params, base, metric, data.factors)
    if pairs:
        add(
            "interactions",
            partial(get_interaction_plot, pairs, metric),
            f"Non-parallel lines mean the factors interact{trivial}.",
        )
        add("heatmaps", partial(get_heatmap_plot, pairs, metric), "Mean metric per pair of levels.")
    else:
        notes["factors"].append("Interaction plots need two factors with two or more levels.")
    if tables.isolation is not None and len(tables.isolation):
        add(
            "isolation",
            partial(get_isolation_plot, tables.isolation, metric),
            "Each scientific factor at its best nuisance setting (label: the setting that won) "
            "and averaged over the nuisance settings.",
        )
    elif tables.isolation is not None:
        notes["isolation"] = [
            "No scientific factor has two levels next to two nuisance settings: nothing to "
            "isolate."
        ]
    if len(tables.cells) > 1:
        add(
            "parallel",
            partial(get_parallel_plot, get_parallel_info(tables.cells, metric)),
            "Every cell as a line through its factor levels; colour and the last axis: its mean.",
        )
    if len(tables.batch):
        scores = base.scores(curve_metric) if base is not None else {}
        steps = partial(
            get_steps_info, data.curves, curve_metric, params, lr_text(data.grid), scores,
            factors=data.factors,
        )  # fmt: skip
        add(
            "batch_steps",
            lambda: get_steps_plot(steps()),
            "The metric against optimizer steps, one line per batch size (band: interval "
            f"over seeds){trivial}.",
        )
    else:
        notes["batch"].append("Batch sizes are compared only when the grid has two or more.")
    if len(data.curves):
        info = get_learning_curves_info(
            data.curves, tables.plateau, tables.overfitting, curve_metric, _priority(tables),
            baselines=base,
        )  # fmt: skip
        add(
            "learning_curves_metric",
            partial(get_learning_curves_plot, info, "metric"),
            "▼ the run's plateau; dotted: the epochs the run's shorter cells are read at"
            f"{trivial} (validation).",
        )
        add(
            "learning_curves_loss",
            partial(get_learning_curves_plot, info, "loss"),
            "✕ confirmed overfitting onsets only, on the validation loss of their seed.",
        )
    else:
        notes["curves"].append("No curves for finished trials: learning curves are skipped.")
    memory = memory_note(data.ok)
    if memory:
        notes["cost"].append(memory)
    healthy = tables.cells[tables.cells["collapsed"] == 0]
    pareto = get_pareto_info(
        healthy, metric, higher_is_better(metric), pareto_costs(data.ok), base, memory
    )
    if pareto.points:
        add(
            "pareto",
            partial(get_pareto_plot, pareto),
            "Cells no other cell beats on both cost and metric (collapsed cells left out).",
        )
    else:
        notes["cost"].append("No train time or peak memory: the Pareto plot is skipped.")
    if not overlays:
        notes["predictions"].append("Prediction overlays were not requested.")
        return _render(jobs), notes
    info = get_overlay_info(
        data.files, _overlay_picks(tables), tables.final, OVERLAY_IMAGES, metric,
        grid_ignore_index(data.grid), data.factors,
    )  # fmt: skip
    if info.note:
        notes["predictions"].append(info.note)
    notes["predictions"] += [
        f"{r.label} cell {r.cell_id}: no overlay, {r.note}" for r in info.rows if r.note
    ]
    if any(r.overlays for r in info.rows):
        add(
            "overlays",
            partial(get_overlay_plot, info),
            f"Green: true positive, red: false positive, blue: false negative, over the input; "
            f"row captions: the trial's {metric}; per image: that image's foreground IoU.",
        )
    return _render(jobs), notes


def _sections(data: StudyData, tables: ReportTables, images: dict, notes: dict) -> list[Section]:
    metric, params = data.metric, data.params

    def img(*names: str) -> tuple[Image, ...]:
        return tuple(images[n] for n in names if n in images)

    anova = tables.anova
    model = ""
    if anova.attrs.get("formula"):
        model = f"Model: {anova.attrs['formula']}; Type II sums of squares."
        if anova.attrs["pooled"]:
            model += f" Pooled into the residual: {', '.join(anova.attrs['pooled'])}."
    order = tables.cells["cell_id"].tolist()
    by_cell = tables.curves_by_cell.set_index("cell_id").reindex(order).dropna(how="all")
    extra = [f for f in data.factors if f not in FACTORS and f in data.excluded.columns]
    excluded = data.excluded[["cell_id", "seed", *FACTORS, *extra, "status", "error"]]
    collapse_rule = params.collapse_rule(metric) if data.baselines is not None else None
    detectable = tables.detectable.sentence(metric) if len(tables.cells) else ""
    isolation = [] if tables.isolation is None else [_isolation_section(tables, params, img, notes)]
    return [
        Section(
            "recommendations",
            "Recommendations",
            rules=(params.recommendation_rule(metric),),
            paragraphs=tuple(collapse_sentences(tables.collapse, metric, limit=50)),
            tables=(
                Table(
                    "cheapest qualifying cell per image size",
                    display_recommendations(tables.recommendations, metric),
                    "tables/recommendations.csv",
                    max_rows=40,
                ),
            ),
        ),
        Section(
            "claims",
            "Rules of thumb",
            rules=(params.claims_rule(),),
            tables=(
                Table(
                    "claims judged on this grid",
                    display_claims(tables.claims),
                    "tables/claims.csv",
                    max_rows=60,
                    wrap=True,
                ),
            ),
        ),
        Section(
            "factors",
            "What matters",
            paragraphs=tuple(p for p in (anova.attrs.get("unit", ""), detectable) if p),
            rules=(params.interval_rule(),),
            images=img("importance", "main_effects", "interactions", "parallel", "heatmaps"),
            tables=(
                Table(
                    "factor importance",
                    display_importance(tables.importance),
                    "tables/importance.csv",
                ),
                Table("ANOVA of the final metric", anova, "tables/anova.csv", caption=model),
            ),
            notes=tuple(notes["factors"]),
        ),
        *isolation,
        Section(
            "batch",
            "Batch size: equal epochs and equal steps",
            paragraphs=tuple(
                batch_sentences(tables.batch_differences, metric, lr_text(data.grid), params)
                + critical_batch_sentences(tables.critical_batch, metric)
            ),
            rules=(batch_rule(metric, params),),
            images=img("batch_steps"),
            tables=tuple(
                Table(title, frame, f"tables/{name}.csv")
                for title, frame, name in (
                    ("differences between batch sizes", tables.batch_differences,
                     "batch_differences"),
                    ("per group and batch size", tables.batch, "batch"),
                    ("critical batch size (McCandlish et al. 2018)", tables.critical_batch,
                     "critical_batch"),
                )
                if len(frame)
            ),  # fmt: skip
            notes=tuple(notes["batch"]),
        ),
        Section(
            "curves",
            "Training curves",
            paragraphs=tuple(edge_sentences(tables.edges, metric, params)),
            rules=tuple(
                r
                for r in (params.plateau_rule(metric), params.onset_rule(), collapse_rule)
                if r
            ),
            images=img("learning_curves_metric", "learning_curves_loss"),
            tables=(
                Table(
                    "per cell, best cells first",
                    by_cell.reset_index(),
                    "tables/curves_by_cell.csv",
                    caption="Per-trial rows: tables/plateau.csv, tables/overfitting.csv.",
                ),
            ),
            notes=tuple(notes["curves"]),
        ),
        Section(
            "cells",
            "Cells",
            paragraphs=(
                f"final is {metric} at the cell's own epoch, 'at best epoch' its best epoch's "
                "value; per-class IoU at the cell's own epoch; costs are means over seeds; "
                "collapsed: seeds at a trivial predictor's score.",
            ),
            rules=(params.interval_rule(),),
            tables=(
                Table(
                    "per cell, best first",
                    display_cells(tables.cells, metric, memory_is_device_memory(data.ok)),
                    "tables/cells.csv",
                ),
            ),
        ),
        Section(
            "cost",
            "Cost and data scaling",
            images=img("pareto"),
            tables=(
                Table("cells on a Pareto frontier", tables.pareto, "tables/pareto.csv"),
                Table(
                    "power law of 1 − metric against data set size",
                    display_scaling(tables.scaling),
                    "tables/scaling.csv",
                    caption=f"Fitted only with ≥ {MIN_SIZES} data set sizes; R² on the log "
                    "scale and RMSE in metric units say how well; a doubling is read off the "
                    "fit only inside the measured sizes, never extrapolated.",
                ),
            ),
            notes=tuple(notes["cost"]),
        ),
        Section(
            "predictions", "Predictions", images=img("overlays"), notes=tuple(notes["predictions"])
        ),
        Section(
            "excluded",
            "Trials left out",
            paragraphs=(
                "Trials that failed, diverged or were infeasible are left out of "
                "every fit and table above.",
            ),
            tables=(Table("excluded trials", excluded),),
            notes=tuple(data.notes),
        ),
    ]


def _isolation_section(tables: ReportTables, params: Params, img, notes: dict) -> Section:
    """The isolation plots and their table, for a grid that declares nuisance factors."""
    metric, table = tables.metric, tables.isolation
    return Section(
        "isolation",
        "Isolation over nuisance settings",
        paragraphs=tuple(isolation_sentences(table, metric)),
        rules=(isolation_rule(metric, params),),
        images=img("isolation"),
        tables=(
            Table("per scientific factor and level", table, "tables/isolation.csv"),
        ),
        notes=tuple(notes.get("isolation", ())),
    )


def write_report(
    run_dir: str | Path,
    metric: str = DEFAULT_METRIC,
    overlays: bool = True,
    to: str | Path | None = None,
    params: Params = DEFAULT_PARAMS,
) -> Report:
    """Analyse the study at ``run_dir`` (a directory or URI) and write its report.

    The report goes to ``run_dir/report/`` or, given ``to``, to that directory or URI.
    Raises :class:`analysis.load.AnalysisInputError` for a missing trials table or an
    unknown metric. ``overlays=False`` skips the prediction overlays.
    """
    data = load(run_dir, metric, params)
    tables = compute_tables(data)
    findings = summarize(data, tables)
    sink = _Sink(data, to)
    table_paths = {
        name: sink.write(f"tables/{name}.csv", frame.to_csv(index=False).encode())
        for name, frame in tables.csv_tables().items()
    }
    with sns.axes_style("whitegrid"):
        images, notes = _plots(data, tables, overlays)
    plot_paths = {name: sink.write(f"plots/{name}.png", im.png) for name, im in images.items()}
    sink.remove_stale_plots()
    seeds = int(tables.cells["n"].max()) if len(tables.cells) else 0
    page = render_page(
        f"gridrun report: {data.grid.get('name', data.name)}",
        study_facts(data, len(tables.cells), seeds),
        findings,
        lead_count(tables),
        _sections(data, tables, images, notes),
    )
    html_path = sink.write("index.html", page.encode("utf-8"))
    all_notes = [n for group in notes.values() for n in group]
    return Report(html_path, findings, table_paths, plot_paths, all_notes)
