import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import binary_baselines
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import analysis
from analysis.baselines import Baselines
from analysis.cells import cells_table
from analysis.figures import BaselineLine, baseline_lines, log_axis
from analysis.importance import get_importance_info, importance_table
from analysis.interactions import get_interaction_info
from analysis.learning_curves import get_learning_curves_info
from analysis.load import FACTORS, load
from analysis.main_effects import get_main_effects_info
from analysis.overfitting import overfitting_table
from analysis.overlays import foreground_iou, get_overlay_info
from analysis.parallel import get_parallel_info
from analysis.pareto import (
    get_pareto_info,
    memory_is_device_memory,
    memory_note,
    pareto_costs,
    pareto_table,
)
from analysis.plateau import plateau_table
from analysis.synthetic import example_grid, synthetic_tables, write_synthetic_run
from gridrun.painting import paint_overlay

# the validation set's 400 background and 112 foreground pixels, scored by each trivial
# predictor: IoU of the foreground, and the mean IoU over both classes
BASELINES = binary_baselines(
    16, 2, (400, 112),
    {"val_iou": 0.0, "val_miou": 400 / 512 / 2},
    {"val_iou": 112 / 512, "val_miou": 112 / 512 / 2},
)  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    trials, curves = synthetic_tables(
        image_sizes=(64, 128), dataset_sizes=(100, 200, 400), epochs=(10, 20), seeds=3
    )
    root = tmp_path_factory.mktemp("study")
    out = write_synthetic_run(root, trials, curves, example_grid(trials), examples=2, size=16)
    (out / "baselines.json").write_text(json.dumps(BASELINES))
    return out


def _final(means: dict[tuple[int, int], list[float]], batch: int = 8) -> pd.DataFrame:
    """Trials of cells (image_size, dataset_size) with one epochs and batch_size level."""
    rows = [
        {"cell_id": f"c{i}", "seed": seed, "image_size": image, "dataset_size": data,
         "epochs": 10, "batch_size": batch, "final": v}
        for i, ((image, data), values) in enumerate(means.items())
        for seed, v in enumerate(values)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _drawn(fig: Figure) -> list:
    """The visible panels of a figure, after drawing it as the report does."""
    FigureCanvasAgg(fig).draw()
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def _baselines_drawn(ax, lines) -> None:
    """The trivial predictors' dashed lines at their scores, after the panel's own."""
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in dashed] == sorted(b.value for b in lines)


def test_importance_bars_are_the_info_omega_squares_coloured_by_significance(study):
    run = load(study)
    table = importance_table(run.final, run.params)
    info = get_importance_info(table)
    (ax,) = _drawn(analysis.plot_factor_importance(run))
    bars = ax.patches
    assert [b.get_width() for b in bars] == pytest.approx(list(info["omega_sq"]))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(info["term"])
    blue = [tuple(b.get_facecolor()) == to_rgba("tab:blue") for b in bars]
    assert blue == list(info["p_value"] < run.params.alpha)
    assert f"p < {run.params.alpha:g}" in ax.get_title()
    assert ax.get_xlabel() == "ω² (share of the variance of final val_iou)"


def test_main_effect_panels_draw_each_levels_mean(study):
    run = load(study)
    info = get_main_effects_info(run.final, run.params, run.baselines, run.metric)
    axes = _drawn(analysis.plot_main_effects(run))
    assert [ax.get_title() for ax in axes] == [e.factor for e in info]
    assert [e.factor for e in info] == ["image_size", "dataset_size", "epochs", "batch_size"]
    for ax, effect in zip(axes, info, strict=True):
        levels = sorted(effect.table[effect.factor])
        means = effect.table.sort_values(effect.factor)["mean"]
        np.testing.assert_allclose(ax.lines[0].get_ydata(), means)
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(v) for v in levels]
        assert ax.get_ylim() == pytest.approx(info.ylim)
        _baselines_drawn(ax, info.baselines)
    assert axes[0].get_ylabel() == "mean val_iou"


def test_interaction_panels_draw_a_line_per_hue_level(study):
    run = load(study)
    info = get_interaction_info(run.final, run.params, run.baselines, run.metric)
    axes = _drawn(analysis.plot_interactions(run))
    assert [ax.get_title() for ax in axes] == [f"{p.x} × {p.hue}" for p in info]
    assert len(axes) == 6  # every pair of four factors
    for ax, pair in zip(axes, info, strict=True):
        hues = sorted(pair.table[pair.hue].unique())
        for line, h in zip(ax.lines, hues, strict=False):
            means = pair.table[pair.table[pair.hue] == h].sort_values(pair.x)["mean"]
            np.testing.assert_allclose(line.get_ydata(), means)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(h) for h in hues]
        assert ax.get_ylim() == pytest.approx(info.ylim)
        _baselines_drawn(ax, info.baselines)


def test_heatmaps_show_the_pairs_means(study):
    run = load(study)
    info = get_interaction_info(run.final, run.params, run.baselines, run.metric)
    axes = [a for a in _drawn(analysis.plot_interactions(run, kind="heatmap")) if a.collections]
    assert [ax.get_title() for ax in axes] == [f"mean val_iou: {p.hue} × {p.x}" for p in info]
    for ax, pair in zip(axes, info, strict=True):
        cells = np.asarray(ax.collections[0].get_array()).ravel()
        np.testing.assert_allclose(cells, pair.heatmap().to_numpy().ravel())


def test_parallel_coordinates_draw_each_cell_at_its_info_positions(study):
    run = load(study)
    info = get_parallel_info(cells_table(run.final, run.metric, run.params), run.metric)
    (ax,) = _drawn(analysis.plot_parallel_coordinates(run))
    (lines,) = ax.collections
    ys = np.array([segment[:, 1] for segment in lines.get_segments()])
    np.testing.assert_allclose(ys, info.positions)
    np.testing.assert_allclose(lines.get_array(), info.values)
    assert [t.get_text() for t in ax.get_xticklabels()] == info.axes == [*FACTORS, "val_iou"]


@pytest.mark.parametrize(("kind", "name"), [("metric", "iou"), ("loss", "loss")])
def test_learning_curve_panels_draw_every_seeds_train_and_validation_curve(study, kind, name):
    run = load(study)
    info = get_learning_curves_info(
        run.curves, plateau_table(run.curves), overfitting_table(run.curves), "val_iou",
        baselines=run.baselines,
    )  # fmt: skip
    axes = _drawn(analysis.plot_learning_curves(run, kind=kind))
    assert [ax.get_title() for ax in axes] == [p.cell_id for p in info.panels]
    for ax, panel in zip(axes, info.panels, strict=True):
        curves = [line for line in ax.lines if line.get_linestyle() in ("-", "--")]
        seeds = list(panel.curves.groupby("seed"))
        expected = [c[f"{split}_{name}"] for _, c in seeds for split in ("train", "val")]
        if kind == "metric":
            curves = curves[: len(expected)]  # then the trivial predictors' lines
        assert len(curves) == len(expected) == 2 * 3
        for line, values in zip(curves, expected, strict=True):
            np.testing.assert_allclose(line.get_ydata(), values)
        assert ax.get_ylabel() == name


def test_pareto_panels_draw_every_cell_and_the_frontier(study):
    run = load(study)
    cells = cells_table(run.final, run.metric, run.params)
    info = get_pareto_info(cells, "val_iou", True, pareto_costs(run.ok), run.baselines)
    axes = _drawn(analysis.plot_pareto(run))
    assert len(axes) == len(info.points) >= 1
    for ax, cost in zip(axes, info.points, strict=True):
        pts, front = info.points[cost], info.frontiers[cost]
        by_size = [pts[pts["image_size"] == s] for s in sorted(pts["image_size"].unique())]
        drawn = [c.get_offsets() for c in ax.collections]
        for offsets, sel in zip(drawn, by_size, strict=False):
            np.testing.assert_allclose(offsets, sel[[cost, "final_mean"]].to_numpy())
        np.testing.assert_allclose(drawn[len(by_size)], front[[cost, "final_mean"]].to_numpy())
        np.testing.assert_allclose(ax.lines[0].get_ydata(), front["final_mean"])
        assert ax.get_ylabel() == "mean val_iou"


def test_overlay_figure_shows_the_inputs_then_each_picks_overlays(study):
    run = load(study)
    ranked = cells_table(run.final, run.metric, run.params)["cell_id"].tolist()
    picks = [("best", ranked[0]), ("worst", ranked[-1])]
    info = get_overlay_info(run.files, picks, run.final)
    fig = analysis.plot_overlays(run)
    FigureCanvasAgg(fig).draw()
    grid = np.array(fig.axes).reshape(3, 2)  # the inputs, then best and worst
    for j, image in enumerate(info.images):
        np.testing.assert_array_equal(grid[0, j].images[0].get_array(), image)
    for i, row in enumerate(info.rows, start=1):
        assert row.label in grid[i, 0].get_ylabel() and row.caption in grid[i, 0].get_ylabel()
        for j, picture in enumerate(row.overlays):
            np.testing.assert_array_equal(grid[i, j].images[0].get_array(), picture)


def test_learning_curves_show_one_panel_per_training_run_marks_on_their_curves(study):
    run = load(study)
    plateau, over = plateau_table(run.curves), overfitting_table(run.curves)
    info = get_learning_curves_info(
        run.curves, plateau, over, "val_iou", ["img64_n100_ep10_bs8"], limit=3
    )
    # 2 image sizes × 3 data set sizes × 2 batch sizes; epochs 10 and 20 share a run
    assert info.candidates == 12
    # a priority cell is shown as the longest cell of its training run
    assert [p.cell_id for p in info.panels][0] == "img64_n100_ep20_bs8"
    assert len(info.panels) == 3
    for panel in info.panels:
        curves = panel.curves.set_index(["seed", "epoch"])
        for mark in panel.marks.itertuples():
            assert mark.value == curves.loc[(mark.seed, mark.epoch), mark.series]
        expected = plateau[(plateau["cell_id"] == panel.cell_id) & plateau["plateau_epoch"].notna()]
        got = panel.marks[panel.marks["kind"] == "plateau"]
        assert sorted(got["epoch"]) == sorted(expected["plateau_epoch"])
    onsets = pd.concat([p.marks for p in info.panels])
    assert set(onsets.loc[onsets["kind"] == "onset", "series"]) <= {"val_loss"}


def test_foreground_iou_counts_the_painted_pixels():
    truth = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    pred = np.array([[1, 0, 1, 0]], dtype=np.uint8)
    assert foreground_iou(truth, pred) == pytest.approx(1 / 3)  # TP, FN, FP, nothing
    assert foreground_iou(np.array([[2]], np.uint8), np.array([[1]], np.uint8)) == 0.0
    ignored = np.array([[1, 255, 0, 255]], dtype=np.uint8)
    assert foreground_iou(ignored, np.array([[1, 1, 0, 0]], np.uint8), 255) == 1.0
    # without the ignore index, 255 is a foreground class: a false negative and a false
    # positive of the wrong class
    assert foreground_iou(ignored, np.array([[1, 1, 0, 0]], np.uint8)) == pytest.approx(1 / 3)


def test_overlay_info_reads_examples_and_each_trials_predictions(study):
    run = load(study)
    final = run.final
    cell = final["cell_id"].iloc[0]
    info = get_overlay_info(run.files, [("best", cell)], final)
    (row,) = info.rows
    assert len(info.images) == 2 and len(row.overlays) == 2
    trials = final[final["cell_id"] == cell].sort_values("final")
    assert row.run_id == trials["run_id"].iloc[1]  # the median of three seeds
    with (
        np.load(study / trials["predictions"].iloc[1]) as pred,
        np.load(study / "predictions/examples.npz") as ex,
    ):
        expected = paint_overlay(ex["image"][0], ex["truth"][0], pred["pred"][0], None)
    np.testing.assert_array_equal(row.overlays[0], expected)


def test_overlay_info_explains_what_is_missing(study, tmp_path):
    run = load(study)
    final = run.final.copy()
    cells = final["cell_id"].unique()
    final.loc[final["cell_id"] == cells[0], "predictions"] = None
    final.loc[final["cell_id"] == cells[1], "predictions"] = "predictions/gone.npz"
    info = get_overlay_info(run.files, [("a", cells[0]), ("b", cells[1])], final)
    assert "has no predictions" in info.rows[0].note
    assert "predictions/gone.npz is missing" in info.rows[1].note
    assert not any(r.overlays for r in info.rows)
    bare = write_synthetic_run(tmp_path / "bare", *synthetic_tables(seeds=1))
    none = get_overlay_info(load(bare).files, [("a", "x")], final)
    assert none.rows == [] and "predictions/examples.npz" in none.note


def test_importance_info_keeps_the_largest_terms_bottom_up():
    table = pd.DataFrame({"term": list("abcde"), "omega_sq": [0.5, 0.3, 0.1, 0.05, 0.0]})
    info = get_importance_info(table, limit=3)
    assert info["term"].tolist() == ["c", "b", "a"]


def test_baseline_lines_read_the_validation_score_for_train_series():
    baselines = Baselines.from_dict(BASELINES)
    lines = baseline_lines(baselines, "val_miou")
    assert lines == (
        BaselineLine("all foreground", 0.109375, "val_miou"),
        BaselineLine("all background", 0.390625, "val_miou"),
    )
    assert lines[1].label == "all background 0.391"
    assert baseline_lines(baselines, "train_miou") == lines
    assert baseline_lines(baselines, "val_loss") == ()
    assert baseline_lines(None, "val_iou") == ()


def test_main_effect_panels_share_one_y_range_and_skip_single_level_factors():
    # three seeds per cell: every level has an interval; epochs and batch_size have one level
    final = _final(
        {(64, 100): [0.5, 0.6, 0.55], (128, 100): [0.7, 0.8, 0.75],
         (64, 200): [0.4, 0.5, 0.45], (128, 200): [0.6, 0.7, 0.65]},
        batch=4,
    )  # fmt: skip
    info = get_main_effects_info(final, baselines=Baselines.from_dict(BASELINES))
    assert [e.factor for e in info] == ["image_size", "dataset_size"]
    assert info.single_level == {"epochs": 10, "batch_size": 4}
    # the range holds every mean, interval bound and trivial score (0 and 0.21875), padded
    # by 5 % of the span on each side
    bounds = [v for e in info for v in (*e.table["ci_low"], *e.table["ci_high"])]
    lo, hi = min(0.0, *bounds), max(bounds)
    assert info.ylim == pytest.approx((lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
    assert [(b.name, b.value) for b in info.baselines] == [
        ("all background", 0.0), ("all foreground", 0.21875),
    ]  # fmt: skip
    fig = analysis.main_effects.get_main_effects_plot(info, "val_iou")
    FigureCanvasAgg(fig).draw()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    for ax in visible:
        assert ax.get_ylim() == pytest.approx(info.ylim)
    assert "batch_size has one level (4): not shown" in fig.get_suptitle()
    labels = {t.get_text() for ax in visible for t in ax.texts}
    assert labels == {"all background 0.000", "all foreground 0.219"}


def test_interaction_panels_share_one_y_range_and_name_single_level_factors():
    final = _final(
        {(64, 100): [0.5, 0.6], (128, 100): [0.7, 0.8], (64, 200): [0.4, 0.5],
         (128, 200): [0.6, 0.9]},
    )  # fmt: skip
    final = pd.concat([final, final.assign(epochs=20, final=final["final"] + 0.05)])
    info = get_interaction_info(final)
    assert [(p.x, p.hue) for p in info] == [
        ("image_size", "dataset_size"), ("image_size", "epochs"), ("dataset_size", "epochs"),
    ]  # fmt: skip
    assert info.single_level == {"batch_size": 8}
    assert info.baselines == ()
    # two seeds: no interval, so the range spans the seed points averaged over the third
    # factor, 0.425 (64 px, 200 images, seed 0) to 0.925 (128, 200, seed 1), padded by 0.025
    assert info.ylim == pytest.approx((0.4, 0.95))
    fig = analysis.interactions.get_interaction_plot(info, "val_iou")
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes:
        assert ax.get_ylim() == pytest.approx(info.ylim)
    assert "batch_size has one level (8): not shown" in fig.get_suptitle()


def test_memory_is_a_cost_only_when_every_trial_ran_on_a_gpu():
    gpu = pd.DataFrame({"device": ["cuda: NVIDIA H200", "cuda: NVIDIA H200"]})
    mixed = pd.DataFrame({"device": ["cuda: NVIDIA H200", "cpu"]})
    old = pd.DataFrame({"cell_id": ["a", "b"]})
    assert memory_is_device_memory(gpu) and memory_note(gpu) == ""
    assert pareto_costs(gpu) == ("train_time_s", "peak_mem_mb")
    assert not memory_is_device_memory(mixed) and not memory_is_device_memory(old)
    assert pareto_costs(mixed) == pareto_costs(old) == ("train_time_s",)
    assert memory_note(mixed).startswith("No memory frontier: 1 of 2 trials ran on CPU")
    assert "resident memory (RSS)" in memory_note(mixed)
    assert "do not record the device" in memory_note(old)


def test_no_memory_frontier_on_cpu():
    cells = pd.DataFrame(
        {"image_size": [64, 128, 128], "dataset_size": 100, "epochs": 10, "batch_size": 8,
         "cell_id": ["a", "b", "c"], "n": 3, "final_mean": [0.5, 0.7, 0.6],
         "train_time_s": [10.0, 30.0, 20.0], "peak_mem_mb": [1200.0, 1100.0, 1150.0]}
    )  # fmt: skip
    cpu = pd.DataFrame({"device": ["cpu"] * 3})
    table = pareto_table(cells, costs=pareto_costs(cpu)).set_index("cell_id")
    assert "on_memory_frontier" not in table and "peak_mem_mb" not in table
    assert table["on_time_frontier"].to_dict() == {"b": True, "c": True, "a": True}
    both = pareto_table(cells).set_index("cell_id")
    assert both["on_memory_frontier"].to_dict() == {"b": True, "c": False, "a": False}
    info = get_pareto_info(
        cells, "val_iou", costs=pareto_costs(cpu), baselines=Baselines.from_dict(BASELINES),
        note=memory_note(cpu),
    )  # fmt: skip
    assert list(info.points) == ["train_time_s"]
    assert info.frontiers["train_time_s"]["cell_id"].tolist() == ["a", "c", "b"]
    assert [b.value for b in info.baselines] == [0.0, 0.21875]
    fig = analysis.pareto.get_pareto_plot(info)
    FigureCanvasAgg(fig).draw()
    assert "3 of 3 trials ran on CPU" in fig.get_suptitle().replace("\n", " ")


def test_log_axis_labels_plain_numbers_at_1_2_5():
    fig = Figure()
    ax = fig.subplots()
    ax.plot([2.4, 33.0], [0, 1])
    assert log_axis(ax, [2.4, 33.0])
    ax.set_xlim(2.4, 33.0)
    FigureCanvasAgg(fig).draw()
    shown = [
        t.get_text() for t in ax.get_xticklabels() if 2.4 <= t.get_position()[0] <= 33.0
    ]
    assert shown == ["5", "10", "20"]
    assert all(t.get_text() == "" for t in ax.xaxis.get_minorticklabels())
    # a range narrower than a factor of 5 stays linear: a log axis would label one tick
    assert not log_axis(fig.subplots(), [20.0, 60.0])


def test_learning_curve_panels_mark_cell_epochs_run_plateau_and_confirmed_onsets(study):
    run = load(study)
    cell = "img64_n100_ep20_bs8"
    plateau = pd.DataFrame(
        {"cell_id": [cell, cell, "img64_n100_ep10_bs8"], "seed": [0, 1, 0],
         "run_plateau_epoch": [12, None, 12], "plateau_epoch": [12, None, None]}
    ).astype({"run_plateau_epoch": "Int64", "plateau_epoch": "Int64"})  # fmt: skip
    # the unconfirmed onset of seed 1 is not an onset and gets no ✕
    over = pd.DataFrame(
        {"cell_id": [cell, cell], "seed": [0, 1], "overfit_epoch": [15, None],
         "unconfirmed_onset_epoch": [None, 19]}
    ).astype({"overfit_epoch": "Int64", "unconfirmed_onset_epoch": "Int64"})  # fmt: skip
    info = get_learning_curves_info(
        run.curves, plateau, over, "val_iou", [cell], limit=1,
        baselines=Baselines.from_dict(BASELINES),
    )  # fmt: skip
    (panel,) = info.panels
    assert panel.cell_id == cell and panel.cell_epochs == (10,)
    marks = panel.marks[["kind", "seed", "epoch"]].values.tolist()
    assert marks == [["plateau", 0, 12], ["onset", 0, 15]]
    assert [(b.name, b.value, b.metric) for b in info.baselines] == [
        ("all background", 0.0, "val_iou"), ("all foreground", 0.21875, "val_iou"),
    ]  # fmt: skip
    fig = analysis.learning_curves.get_learning_curves_plot(info, "metric")
    FigureCanvasAgg(fig).draw()
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts == {"ep10 cell", "all background 0.000 (val)", "all foreground 0.219 (val)"}


def test_overlay_rows_are_captioned_with_the_reports_metric(study):
    run = load(study, metric="val_dice")
    final = run.final
    cell = "img128_n400_ep20_bs8"
    info = get_overlay_info(run.files, [("best", cell)], final, metric="val_dice")
    (row,) = info.rows
    trial = final[final["run_id"] == row.run_id].iloc[0]
    assert row.value == trial["final"] and row.epoch == 20
    assert row.caption == f"val_dice {trial['final']:.3f} at epoch 20"
    fig = analysis.overlays.get_overlay_plot(info)
    FigureCanvasAgg(fig).draw()
    assert fig.axes[len(info.images)].get_ylabel().endswith(row.caption)
    assert all(
        ax.get_title().startswith(("this image's fg IoU", "no foreground"))
        for ax in fig.axes[len(info.images) :]
    )
