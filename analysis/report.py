"""``gridrun report``: a run directory in, ``report/`` with tables, plots and HTML out.

Layout written under ``DIR/report/``: ``index.html`` (self-contained, images
embedded), ``tables/*.csv`` and ``plots/*.png``, each file written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.findings import ReportTables, compute_tables, summarize
from analysis.html import Section, render_page
from analysis.interactions import get_heatmap_plot, get_interaction_info, get_interaction_plot
from analysis.learning_curves import get_learning_curves_info, get_learning_curves_plot
from analysis.load import FACTORS, RunData, higher_is_better, load_run
from analysis.overlays import get_overlay_info, get_overlay_plot
from analysis.pareto import get_pareto_info, get_pareto_plot
from gridrun.store import atomic_write

__all__ = ["Report", "write_report"]

_EXCLUDED_COLUMNS: list[str] = ["cell_id", "seed", *FACTORS, "status", "error"]
# note: the page shows the columns a reader compares; the CSV has them all
_CELL_COLUMNS: list[str] = [
    *FACTORS,
    "n",
    "final_mean",
    "final_ci_low",
    "final_ci_high",
    "best_mean",
    "best_epoch",
    "train_time_s",
    "peak_mem_mb",
]


@dataclass
class Report:
    """What :func:`write_report` wrote, and the findings to print."""

    html_path: Path
    findings: list[str]
    tables: dict[str, Path] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    return path


def _draw_plots(
    data: RunData, tables: ReportTables, plot_dir: Path, overlays: bool
) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Write every plot the data allow; return their paths and per-section notes."""
    plots: dict[str, Path] = {}
    notes: dict[str, list[str]] = {"factors": [], "curves": [], "cost": [], "overlays": []}
    metric = data.metric
    pairs = get_interaction_info(tables.final)
    if pairs:
        plots["interactions"] = _save(
            get_interaction_plot(pairs, metric), plot_dir / "interactions.png"
        )
        plots["heatmaps"] = _save(get_heatmap_plot(pairs, metric), plot_dir / "heatmaps.png")
    else:
        notes["factors"].append("Interaction plots need two factors with two or more levels.")
    if len(data.curves):
        info = get_learning_curves_info(data.curves, tables.plateau, tables.overfitting)
        for kind in ("iou", "loss"):
            path = plot_dir / f"learning_curves_{kind}.png"
            plots[f"learning_curves_{kind}"] = _save(get_learning_curves_plot(info, kind), path)
    else:
        notes["curves"].append("No curves for finished trials: learning curves are skipped.")
    pareto = get_pareto_info(tables.cells, metric, higher_is_better(metric))
    if pareto.points:
        plots["pareto"] = _save(get_pareto_plot(pareto), plot_dir / "pareto.png")
    else:
        notes["cost"].append("No train time or peak memory: the Pareto plot is skipped.")
    if not overlays:
        notes["overlays"].append("Prediction overlays were not requested.")
        return plots, notes
    for ov in get_overlay_info(data.run_dir, tables.cells, tables.final):
        if ov.examples:
            path = plot_dir / f"overlay_{ov.label}.png"
            plots[f"overlay_{ov.label}"] = _save(get_overlay_plot(ov), path)
        else:
            notes["overlays"].append(f"{ov.label} cell {ov.cell_id}: overlay skipped, {ov.note}")
    return plots, notes


def _sections(
    data: RunData, tables: ReportTables, plots: dict[str, Path], notes: dict[str, list[str]]
) -> list[Section]:
    def img(*names: str) -> tuple[Path, ...]:
        return tuple(plots[n] for n in names if n in plots)

    anova = tables.anova
    anova_text = (f"Model: {anova.formula}. Type II sums of squares.",) if anova.formula else ()
    if anova.pooled:
        anova_text += (f"Pooled into the residual: {', '.join(anova.pooled)}.",)
    excluded = data.excluded[_EXCLUDED_COLUMNS]
    return [
        Section(
            "Trials left out",
            paragraphs=(
                "Trials that failed, diverged or were infeasible are left out of every fit "
                "and table below.",
            ),
            tables=(("excluded trials", excluded, ""),),
            notes=tuple(data.notes),
        ),
        Section(
            "Cells",
            paragraphs=(f"final_* is {data.metric} at the last epoch, best_* at the best epoch.",),
            tables=(("per cell, over seeds", tables.cells[_CELL_COLUMNS], "tables/cells.csv"),),
        ),
        Section(
            "Factors",
            paragraphs=anova_text,
            tables=(("ANOVA of the final metric", anova.table, "tables/anova.csv"),),
            images=img("interactions", "heatmaps"),
            notes=tuple(notes["factors"]),
        ),
        Section(
            "Training curves",
            paragraphs=(
                "Plateau: the validation metric no longer beats its best by 0.005 for 5 epochs "
                "(centred 5-epoch median), and never later climbs 5 × 0.005 above it. "
                "Overfitting onset: Prechelt's GL > 5 while the training loss is still below "
                "its value at the validation minimum.",
            ),
            tables=(
                ("plateaus", tables.plateau, "tables/plateau.csv"),
                ("overfitting", tables.overfitting, "tables/overfitting.csv"),
            ),
            images=img("learning_curves_iou", "learning_curves_loss"),
            notes=tuple(notes["curves"]),
        ),
        Section(
            "Cost and data scaling",
            tables=(
                ("Pareto frontier cells", tables.pareto, "tables/pareto.csv"),
                (
                    "power law of 1 − metric against data set size",
                    tables.scaling,
                    "tables/scaling.csv",
                ),
            ),
            images=img("pareto"),
            notes=tuple(notes["cost"]),
        ),
        Section(
            "Predictions",
            paragraphs=("Prediction (p > 0.5) in red, ground truth in green.",),
            images=img("overlay_best", "overlay_worst"),
            notes=tuple(notes["overlays"]),
        ),
    ]


def write_report(run_dir: Path, metric: str = "val_iou", overlays: bool = True) -> Report:
    """Analyse ``run_dir`` and write ``run_dir/report/``; return paths and findings.

    Raises :class:`analysis.load.AnalysisInputError` for a missing trials table
    or an unknown metric. ``overlays=False`` skips the checkpoint predictions.
    """
    data = load_run(Path(run_dir), metric)
    tables = compute_tables(data)
    findings = summarize(data, tables)

    out = data.run_dir / "report"
    table_dir, plot_dir = out / "tables", out / "plots"
    table_dir.mkdir(parents=True, exist_ok=True)
    plot_dir.mkdir(parents=True, exist_ok=True)
    for stale in plot_dir.glob("*.png"):
        stale.unlink()
    table_paths = {}
    for name, frame in tables.csv_tables().items():
        table_paths[name] = table_dir / f"{name}.csv"
        atomic_write(table_paths[name], lambda tmp, f=frame: f.to_csv(tmp, index=False))

    with sns.axes_style("whitegrid"):
        plots, notes = _draw_plots(data, tables, plot_dir, overlays)
    html_path = out / "index.html"
    page = render_page(
        f"gridrun report: {data.run_dir.name} ({metric})",
        findings,
        _sections(data, tables, plots, notes),
    )
    atomic_write(html_path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    all_notes = [n for group in notes.values() for n in group]
    return Report(html_path, findings, table_paths, plots, all_notes)
