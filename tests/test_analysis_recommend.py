import numpy as np
import pandas as pd
import pytest

from analysis.cells import cells_table
from analysis.params import Params
from analysis.recommend import recommendation_sentences, recommendations_table
from analysis.stats import format_interval


def _cells(spec: dict[str, tuple], metric: str = "val_iou") -> pd.DataFrame:
    """cell_id → (image_size, epochs, per-seed values, train time, steps)."""
    rows = []
    for cell_id, (image, epochs, values, seconds, steps) in spec.items():
        for seed, v in enumerate(values):
            rows.append(
                {
                    "cell_id": cell_id,
                    "seed": seed,
                    "image_size": image,
                    "dataset_size": 100,
                    "epochs": epochs,
                    "batch_size": 8,
                    "final": v,
                    "best": v,
                    "best_epoch": epochs,
                    "steps": steps,
                    "train_time_s": seconds,
                    "peak_mem_mb": 1.0,
                }
            )
    return cells_table(pd.DataFrame(rows), metric)


def _value(cells: pd.DataFrame, cell_id: str) -> str:
    """The cell's mean and interval as the sentences print them."""
    row = cells.set_index("cell_id").loc[cell_id]
    return format_interval(row["final_mean"], row["final_ci_low"], row["final_ci_high"])


SEPARABLE = {
    "best": (128, 80, [0.800, 0.802, 0.804], 100.0, 800),
    # within the margin, not significantly worse: cheapest in time
    "close": (128, 40, [0.794, 0.800, 0.806], 40.0, 400),
    # within the margin but consistently worse: Welch finds it
    "tight": (128, 30, [0.7955, 0.7960, 0.7965], 30.0, 300),
    # cheapest, far worse
    "cheap": (128, 10, [0.70, 0.71, 0.72], 10.0, 100),
    # image size 64: fewest steps is not fastest here
    "small_best": (64, 80, [0.70, 0.71, 0.72], 50.0, 800),
    "small_fast": (64, 40, [0.70, 0.71, 0.72], 20.0, 900),
}


def test_cheapest_qualifying_cell_per_image_size_and_cost():
    table = recommendations_table(_cells(SEPARABLE)).set_index(["image_size", "by"])
    row = table.loc[(128, "train_time_s")]
    assert row["cell_id"] == "close"
    assert row["best_cell_id"] == "best"
    assert row["gap"] == pytest.approx(0.802 - 0.800)
    assert row["cost"] == 40.0 and row["best_cost"] == 100.0
    assert row["cost_ratio"] == pytest.approx(0.4)
    assert row["qualifying"] == 2 and row["cells"] == 4
    assert row["separable"]
    assert 0.05 <= row["p_worse"] < 0.6
    # "tight" is within 0.01 but worse beyond doubt; "cheap" misses the margin
    assert table.loc[(128, "steps"), "cell_id"] == "close"
    assert table.loc[(64, "train_time_s"), "cell_id"] == "small_fast"
    assert table.loc[(64, "steps"), "cell_id"] == "small_best"
    assert np.isnan(table.loc[(64, "steps"), "p_worse"])  # the best cell is not tested


def test_margin_and_alpha_come_from_params():
    wide = recommendations_table(_cells(SEPARABLE), params=Params(margin=0.2, alpha=1e-9))
    assert wide.set_index(["image_size", "by"]).loc[(128, "train_time_s"), "cell_id"] == "cheap"


def test_a_grid_that_cannot_separate_cells_says_so():
    noisy = {
        "a": (128, 80, [0.70, 0.80, 0.90], 100.0, 800),
        "b": (128, 40, [0.69, 0.79, 0.89], 50.0, 400),
        "c": (128, 20, [0.60, 0.80, 0.85], 25.0, 200),
    }
    table = recommendations_table(_cells(noisy))
    assert not table["separable"].any()
    assert table.loc[0, "cell_id"] == "b"  # c is 0.05 below: outside the margin
    (sentence,) = recommendation_sentences(table, "val_iou")
    assert sentence.startswith("Image size 128: the grid cannot separate its 3 cells")
    assert "by train time b at 0.5× its train time" in sentence


def test_sentence_names_the_pick_its_interval_and_its_cost():
    cells = _cells(SEPARABLE)
    sentences = recommendation_sentences(recommendations_table(cells), "val_iou")
    assert len(sentences) == 2
    assert sentences[1] == (
        f"Image size 128: use close (val_iou {_value(cells, 'close')}), within 0.01 of the best "
        "cell best (0.802) and not significantly worse (one-sided Welch p = 0.31), at 0.4× its "
        "train time and 0.5× its steps."
    )
    assert sentences[0] == (
        "Image size 64: the grid cannot separate its 2 cells — none is significantly worse than "
        "the best, small_best (val_iou 0.710); within 0.01 of it the cheapest is by train time "
        "small_fast at 0.4× its train time; by steps the best cell itself."
    )


def test_a_pick_by_steps_never_takes_more_time_than_the_best_cell():
    # issue 15: batch 4 halves the steps of batch 2 but takes 29.0 s against 27.9 s
    spec = {
        "bs2": (128, 16, [0.780, 0.785, 0.789], 27.9, 192),
        "bs4": (128, 16, [0.776, 0.780, 0.782], 29.0, 96),
        "bad": (128, 8, [0.50, 0.51, 0.52], 5.0, 48),
    }
    cells = _cells(spec)
    table = recommendations_table(cells).set_index("by")
    assert table.loc["steps", "cell_id"] == "bs2"
    assert table.loc["steps", "cost_ratio"] == 1.0
    (sentence,) = recommendation_sentences(table.reset_index(), "val_iou")
    assert sentence == (
        f"Image size 128: use the best cell, bs2 (val_iou {_value(cells, 'bs2')}); no cell with "
        "a lower train time is within 0.01 of it and not significantly worse, nor any with "
        "fewer steps and no more train time."
    )
    # the same cell at no more time than the best is a saving, and is picked
    spec["bs4"] = (128, 16, [0.776, 0.780, 0.782], 27.9, 96)
    table = recommendations_table(_cells(spec)).set_index("by")
    assert table.loc["steps", "cell_id"] == "bs4"
    assert table.loc["steps", "cost_ratio"] == 0.5


def test_a_time_that_is_not_measured_does_not_block_a_pick_by_steps():
    spec = {
        "best": (64, 80, [0.80, 0.81, 0.82], np.nan, 800),
        "fewer_steps": (64, 40, [0.80, 0.81, 0.82], 20.0, 400),
    }
    table = recommendations_table(_cells(spec))
    assert list(table["by"]) == ["steps"]  # no train time for the best: no time pick
    assert table.loc[0, "cell_id"] == "fewer_steps"


def test_cells_with_a_collapsed_seed_are_never_recommended():
    cells = _cells(SEPARABLE)
    cells["collapsed"] = np.where(cells["cell_id"] == "close", 1, 0)
    table = recommendations_table(cells).set_index(["image_size", "by"])
    # without "close", no cell of 128 px within the margin is cheaper than the best
    assert table.loc[(128, "train_time_s"), "cell_id"] == "best"
    assert table.loc[(128, "steps"), "cell_id"] == "best"
    assert table.loc[(128, "train_time_s"), "cells"] == 3
    # a collapsed best cell is not the reference either
    cells["collapsed"] = np.where(cells["cell_id"] == "small_best", 2, 0)
    table = recommendations_table(cells).set_index(["image_size", "by"])
    assert table.loc[(64, "train_time_s"), "best_cell_id"] == "small_fast"
    assert table.loc[(64, "steps"), "cell_id"] == "small_fast"
    # an unknown collapse count (no baselines) does not exclude a cell
    cells["collapsed"] = np.nan
    assert len(recommendations_table(cells)) == len(recommendations_table(_cells(SEPARABLE)))


def test_single_seed_grid_picks_by_margin_only():
    single = {"a": (64, 80, [0.80], 100.0, 800), "b": (64, 40, [0.795], 60.0, 400)}
    table = recommendations_table(_cells(single))
    assert table.loc[0, "cell_id"] == "b"
    assert np.isnan(table.loc[0, "p_worse"])
    (sentence,) = recommendation_sentences(table, "val_iou")
    assert "one seed per cell, so no test can tell cells apart" in sentence


def test_loss_metric_prefers_lower_values():
    loss = {
        "best": (64, 80, [0.10, 0.11, 0.12], 100.0, 800),
        "close": (64, 40, [0.11, 0.115, 0.12], 50.0, 400),
        "bad": (64, 20, [0.30, 0.31, 0.32], 10.0, 200),
    }
    table = recommendations_table(_cells(loss, "val_loss"), "val_loss")
    assert table.loc[0, "best_cell_id"] == "best"
    assert table.loc[0, "cell_id"] == "close"


def test_sentence_when_the_best_cell_is_cheapest_by_every_cost():
    spec = {
        "best": (64, 80, [0.80, 0.81, 0.82], 10.0, 100),
        "bad": (64, 20, [0.50, 0.51, 0.52], 50.0, 800),
    }
    cells = _cells(spec)
    (sentence,) = recommendation_sentences(recommendations_table(cells), "val_iou")
    assert sentence == (
        f"Image size 64: use the best cell, best (val_iou {_value(cells, 'best')}); no cell with "
        "a lower train time is within 0.01 of it and not significantly worse, nor any with "
        "fewer steps and no more train time."
    )
