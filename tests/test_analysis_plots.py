from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import analysis
from analysis.importance import _get_importance_info
from analysis.learning_curves import _get_learning_curves_info
from analysis.load import load
from analysis.overfitting import overfitting_table
from analysis.overlays import COLORS, OPACITY, _get_overlay_info, foreground_iou, overlay
from analysis.plateau import plateau_table
from analysis.synthetic import example_grid, synthetic_tables, write_synthetic_run


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    trials, curves = synthetic_tables(
        image_sizes=(64, 128), dataset_sizes=(100, 200, 400), epochs=(10, 20), seeds=3
    )
    root = tmp_path_factory.mktemp("study")
    return write_synthetic_run(root, trials, curves, example_grid(trials), examples=2, size=16)


@pytest.mark.parametrize(
    ("plot", "kwargs"),
    [
        (analysis.plot_factor_importance, {}),
        (analysis.plot_main_effects, {}),
        (analysis.plot_interactions, {}),
        (analysis.plot_interactions, {"kind": "heatmap"}),
        (analysis.plot_parallel_coordinates, {}),
        (analysis.plot_learning_curves, {}),
        (analysis.plot_learning_curves, {"kind": "loss"}),
        (analysis.plot_pareto, {}),
        (analysis.plot_overlays, {}),
    ],
)
def test_every_plot_returns_a_drawable_figure(study, plot, kwargs):
    fig = plot(load(study), **kwargs)
    assert isinstance(fig, Figure)
    assert any(ax.get_visible() for ax in fig.axes)
    FigureCanvasAgg(fig).draw()


def test_learning_curves_show_one_panel_per_training_run_marks_on_their_curves(study):
    run = load(study)
    plateau, over = plateau_table(run.curves), overfitting_table(run.curves)
    info = _get_learning_curves_info(
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


def test_overlay_paints_tp_fp_fn_over_the_input():
    image = np.full((1, 4, 3), 100, dtype=np.uint8)
    truth = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    pred = np.array([[1, 0, 1, 0]], dtype=np.uint8)
    out = overlay(image, truth, pred)

    def blend(color):
        return np.rint((1 - OPACITY) * 100 + OPACITY * np.asarray(color)).astype(np.uint8)

    np.testing.assert_array_equal(out[0, 0], blend(COLORS["TP"]))
    np.testing.assert_array_equal(out[0, 1], blend(COLORS["FN"]))
    np.testing.assert_array_equal(out[0, 2], blend(COLORS["FP"]))
    np.testing.assert_array_equal(out[0, 3], [100, 100, 100])
    assert tuple(COLORS["FP"]) == (255, 0, 0)
    assert foreground_iou(truth, pred) == pytest.approx(1 / 3)
    # a pixel of the wrong foreground class is a false positive
    wrong = overlay(image[:, :1], np.array([[2]], np.uint8), np.array([[1]], np.uint8))
    np.testing.assert_array_equal(wrong[0, 0], blend(COLORS["FP"]))


def test_overlay_info_reads_examples_and_each_trials_predictions(study):
    run = load(study)
    final = run.final
    cell = final["cell_id"].iloc[0]
    info = _get_overlay_info(run.files, [("best", cell)], final)
    (row,) = info.rows
    assert len(info.images) == 2 and len(row.overlays) == 2
    trials = final[final["cell_id"] == cell].sort_values("final")
    assert row.run_id == trials["run_id"].iloc[1]  # the median of three seeds
    with (
        np.load(study / trials["predictions"].iloc[1]) as pred,
        np.load(study / "predictions/examples.npz") as ex,
    ):
        expected = overlay(ex["image"][0], ex["truth"][0], pred["pred"][0])
    np.testing.assert_array_equal(row.overlays[0], expected)


def test_overlay_info_explains_what_is_missing(study, tmp_path):
    run = load(study)
    final = run.final.copy()
    cells = final["cell_id"].unique()
    final.loc[final["cell_id"] == cells[0], "predictions"] = None
    final.loc[final["cell_id"] == cells[1], "predictions"] = "predictions/gone.npz"
    info = _get_overlay_info(run.files, [("a", cells[0]), ("b", cells[1])], final)
    assert "has no predictions" in info.rows[0].note
    assert "predictions/gone.npz is missing" in info.rows[1].note
    assert not any(r.overlays for r in info.rows)
    bare = write_synthetic_run(tmp_path / "bare", *synthetic_tables(seeds=1))
    none = _get_overlay_info(load(bare).files, [("a", "x")], final)
    assert none.rows == [] and "predictions/examples.npz" in none.note


def test_importance_info_keeps_the_largest_terms_bottom_up():
    table = pd.DataFrame({"term": list("abcde"), "omega_sq": [0.5, 0.3, 0.1, 0.05, 0.0]})
    info = _get_importance_info(table, limit=3)
    assert info["term"].tolist() == ["c", "b", "a"]
