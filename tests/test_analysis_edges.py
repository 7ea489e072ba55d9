import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.edges import edge_sentences, edges_table

LEVELS = {
    "image_size": [64, 128], "dataset_size": [12, 24], "epochs": [8, 16], "batch_size": [2, 4],
}  # fmt: skip


def _cells(levels=LEVELS, mean=None) -> pd.DataFrame:
    """Every cell of the grid; by default bigger images, more data, more epochs and
    smaller batches are better, so the best cell sits at an edge in every factor."""
    mean = mean or (lambda img, n, ep, bs: 0.3 + img / 640 + n / 240 + ep / 160 - bs / 40)
    rows = [
        {
            "image_size": img, "dataset_size": n, "epochs": ep, "batch_size": bs,
            "cell_id": f"img{img}_n{n}_ep{ep}_bs{bs}", "final_mean": mean(img, n, ep, bs),
        }  # fmt: skip
        for img, n, ep, bs in itertools.product(*levels.values())
    ]
    return pd.DataFrame(rows).sort_values("final_mean", ascending=False, ignore_index=True)


def _plateau(cell_id: str, epoch: int, recent: list[float], plateau=(None, None, None),
             later=(np.nan, np.nan, np.nan)) -> pd.DataFrame:  # fmt: skip
    return pd.DataFrame(
        {
            "cell_id": cell_id,
            "seed": [0, 1, 2],
            "trial_epoch": epoch,
            "plateau_epoch": pd.array(list(plateau), dtype="Int64"),
            "recent_gain": recent,
            "gain_after_trial": list(later),
        }
    )


def test_best_cell_at_every_edge_and_still_improving_says_extend_every_factor():
    cells = _cells()
    best = cells.loc[0, "cell_id"]
    assert best == "img128_n24_ep16_bs2"
    edges = edges_table(cells, _plateau(best, 16, [0.03, 0.02, 0.04]), LEVELS, "val_iou", top=1)
    rows = edges.set_index("factor")
    assert rows["edge"].tolist() == ["highest", "highest", "highest", "lowest"]
    assert rows["neighbour_level"].tolist() == [64, 12, 8, 4]
    assert rows.loc["image_size", "neighbour_mean"] == pytest.approx(
        cells.loc[0, "final_mean"] - 64 / 640
    )
    assert rows["neighbour_worse"].tolist() == [True] * 4
    assert rows["extend"].tolist() == [True] * 4
    assert rows["still_improving"].all() and (rows["improving_seeds"] == 3).all()
    assert edge_sentences(edges, "val_iou") == [
        "The best cell img128_n24_ep16_bs2 sits at the largest image_size (128), the largest "
        "dataset_size (24), the most epochs (16) and the smallest batch_size (2), and its run "
        "is still improving at epoch 16 (+0.030 over the last 5 epochs): extend image_size "
        "above 128, dataset_size above 24, epochs above 16 and batch_size below 2."
    ]


def test_a_cell_inside_the_grid_with_a_plateaued_run_points_nowhere():
    levels = {**LEVELS, "image_size": [64, 128, 256]}
    # the best image size is the middle one, and the grid also lists 256 (not yet run)
    cells = _cells(
        {**LEVELS, "image_size": [64, 128]},
        lambda img, n, ep, bs: 0.5 + (img == 128) * 0.1 + n / 2400 + ep / 1600 + bs / 400,
    )
    best = cells.loc[0, "cell_id"]
    assert best == "img128_n24_ep16_bs4"
    plateau = _plateau(best, 16, [0.0, 0.001, 0.0], plateau=(9, 10, 9))
    edges = edges_table(cells, plateau, levels, "val_iou", top=1).set_index("factor")
    assert pd.isna(edges.loc["image_size", "edge"])
    assert not edges.loc["image_size", "extend"]
    # at its largest dataset size and batch size with worse neighbours: extend those; the
    # 8-epoch cell is worse too, but the run has plateaued by epoch 10: epochs stay
    assert edges["extend"].tolist() == [False, True, False, True]
    assert edges.loc["epochs", "neighbour_worse"]
    assert not edges["still_improving"].any()
    (sentence,) = edge_sentences(edges.reset_index(), "val_iou")
    assert "image_size" not in sentence and "still improving" not in sentence
    assert sentence.endswith(
        "extend dataset_size above 24 and batch_size above 4."
    )


def test_no_edge_and_not_improving_is_said_for_the_best_cell():
    one_level = {"dataset_size": [12], "epochs": [16], "batch_size": [2]}
    cells = _cells(
        {"image_size": [64, 128, 256], **one_level},
        lambda img, n, ep, bs: 0.7 - abs(img - 128) / 1000,
    )
    plateau = _plateau("img128_n12_ep16_bs2", 16, [0.0, 0.0, 0.0], plateau=(8, 8, 8))
    edges = edges_table(cells, plateau, None, "val_iou", top=1)
    assert edges["extend"].tolist() == [False] * 4
    assert edges.set_index("factor")["n_levels"].tolist() == [3, 1, 1, 1]
    assert edge_sentences(edges, "val_iou") == [
        "The best cell img128_n12_ep16_bs2 points past the grid in no factor (none at its "
        "lowest or highest level with a worse neighbour level) and its run is not still "
        "improving at epoch 16."
    ]


def test_still_improving_needs_most_seeds_and_counts_a_gain_after_the_trial():
    cells = _cells()
    best = cells.loc[0, "cell_id"]
    one_seed = _plateau(best, 16, [0.03, 0.0, 0.0])
    assert not edges_table(cells, one_seed, LEVELS, top=1)["still_improving"].any()
    # flat over its last epochs, but its run gains 0.22 after the trial's epoch
    later = _plateau(best, 16, [0.0, 0.0, 0.0], later=(0.22, 0.2, 0.25))
    edges = edges_table(cells, later, LEVELS, top=1)
    assert edges["still_improving"].all()
    assert "still improving at epoch 16 (+0.220 later in its run)" in edge_sentences(edges)[0]
    plateaued = _plateau(best, 16, [0.03, 0.03, 0.03], plateau=(10, 10, 10))
    assert not edges_table(cells, plateaued, LEVELS, top=1)["still_improving"].any()


def test_a_missing_neighbour_or_a_lower_is_better_metric():
    cells = _cells()
    best = cells.loc[0, "cell_id"]
    gone = cells[cells["cell_id"] != "img64_n24_ep16_bs2"]
    edges = edges_table(gone, _plateau(best, 16, [0.0] * 3), LEVELS, top=1).set_index("factor")
    assert pd.isna(edges.loc["image_size", "neighbour_worse"])
    assert not edges.loc["image_size", "extend"]
    # read as a loss, the lowest value is best: the top cell's neighbours score "better"
    loss = edges_table(cells, _plateau(best, 16, [0.0] * 3), LEVELS, "val_loss", top=1)
    assert not loss["neighbour_worse"].any()


def test_top_cells_each_get_their_sentence():
    cells = _cells()
    plateau = pd.concat(_plateau(c, 16, [0.0] * 3, plateau=(9, 9, 9)) for c in cells["cell_id"][:3])
    edges = edges_table(cells, plateau, LEVELS, top=3)
    assert edges["rank"].unique().tolist() == [1, 2, 3]
    sentences = edge_sentences(edges)
    assert [s.split(" img")[0] for s in sentences] == [
        "The best cell", "The 2nd best cell", "The 3rd best cell",
    ]  # fmt: skip


def test_a_cell_read_off_a_better_cells_runs_is_not_a_top_cell_of_its_own():
    # epochs matter least: the 8-epoch read of the best cell's runs is the 2nd best cell
    cells = _cells(mean=lambda img, n, ep, bs: img / 640 + n / 240 + ep / 1600 - bs / 40)
    best, second, third = cells["cell_id"][:3]
    assert (best, second) == ("img128_n24_ep16_bs2", "img128_n24_ep8_bs2")
    runs = [f"{best}_s{s}" for s in range(3)]
    plateau = pd.concat(
        [
            _plateau(best, 16, [0.03] * 3).assign(training_run=runs),
            _plateau(second, 8, [0.05] * 3, later=(0.1,) * 3).assign(training_run=runs),
            _plateau(third, 16, [0.0] * 3, plateau=(9, 9, 9)).assign(
                training_run=[f"{third}_s{s}" for s in range(3)]
            ),
        ]
    )
    edges = edges_table(cells, plateau, LEVELS, top=2)
    assert edges.groupby("rank")["cell_id"].first().tolist() == [best, third]
