from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import AnalysisInputError, final_metrics, load, split_trials, varying_factors
from analysis.synthetic import example_grid, synthetic_tables, write_synthetic_run


@pytest.fixture
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic_tables(
        image_sizes=(64,), dataset_sizes=(100, 200), epochs=(12,), batch_sizes=(8,), seeds=2
    )


def test_missing_trials_table_names_the_file(tmp_path: Path):
    with pytest.raises(AnalysisInputError, match="trials.parquet"):
        load(tmp_path)


def test_unreadable_trials_table_names_the_file(tmp_path: Path):
    (tmp_path / "trials.parquet").write_text("not parquet")
    with pytest.raises(AnalysisInputError, match="trials.parquet"):
        load(tmp_path)


def test_unknown_metric_is_named(tmp_path: Path, tables):
    run = write_synthetic_run(tmp_path, *tables)
    with pytest.raises(AnalysisInputError, match="'val_bogus'"):
        load(run, "val_bogus")


def test_final_metric_is_last_epoch_of_each_finished_ok_trial(tmp_path: Path, tables):
    trials, curves = tables
    trials.loc[0, ["status", "error"]] = ["failed", "CUDA out of memory"]
    trials.loc[0, ["final_val_iou", "best_val_iou"]] = np.nan
    # trial 1 still runs: no trial row yet, only its first 5 epochs
    running = trials.loc[1, "run_id"]
    trials = trials.drop(index=1)
    curves = curves[(curves["run_id"] != running) | (curves["epoch"] <= 5)]
    data = load(write_synthetic_run(tmp_path, trials, curves), "val_dice")

    assert list(data.excluded["status"]) == ["failed"]
    assert len(data.running) == 1
    assert any("1 failed" in n for n in data.notes)
    assert any("still running" in n for n in data.notes)
    final = data.final
    assert len(final) == len(trials) - 1
    last = curves[curves["epoch"] == 12].set_index(["cell_id", "seed"])["val_dice"]
    got = final.set_index(["cell_id", "seed"])["final"]
    assert got.to_dict() == pytest.approx(last.reindex(got.index).to_dict())
    assert (final["best"] >= final["final"]).all()
    assert "RunData(" in repr(data) and "1 running" in repr(data)


def test_hand_written_trials_without_new_columns_or_curves(tmp_path: Path):
    trials = pd.DataFrame(
        {
            "cell_id": ["a", "a", "b", "b"],
            "seed": [0, 1, 0, 1],
            "image_size": 64,
            "dataset_size": [100, 100, 200, 200],
            "epochs": 5,
            "batch_size": 4,
            "status": "ok",
            "final_val_iou": [0.5, 0.6, 0.7, None],
        }
    )
    trials.to_parquet(tmp_path / "trials.parquet")
    data = load(tmp_path)
    assert any("curves.parquet is missing" in n for n in data.notes)
    for col in ("training_run", "checkpoint", "predictions", "node_id"):
        assert data.trials[col].isna().all()
    assert data.grid == {}
    final = final_metrics(data)
    assert list(final["final"]) == [0.5, 0.6, 0.7]
    assert varying_factors(final) == ["dataset_size"]
    with pytest.raises(AnalysisInputError, match="val_miou"):
        load(tmp_path, "val_miou")


def test_grid_file_and_training_runs_are_read(tmp_path: Path):
    trials, curves = synthetic_tables(epochs=(10, 20), seeds=1)
    data = load(write_synthetic_run(tmp_path, trials, curves, example_grid(trials)))
    assert data.grid["factors"]["epochs"] == [10, 20]
    # cells that differ only in epochs share a training run, and its first epochs
    shared = data.curves[data.curves["training_run"] == "img64_n100_bs8_s0"]
    assert set(shared["cell_id"]) == {"img64_n100_ep10_bs8", "img64_n100_ep20_bs8"}
    short = shared[shared["cell_id"] == "img64_n100_ep10_bs8"].set_index("epoch")["val_iou"]
    long = shared[shared["cell_id"] == "img64_n100_ep20_bs8"].set_index("epoch")["val_iou"]
    pd.testing.assert_series_equal(short, long.loc[:10])


def test_split_trials_bounds():
    curves = pd.DataFrame(
        {
            "cell_id": ["b", "a", "a", "b"],
            "seed": [0, 0, 0, 0],
            "image_size": 1,
            "dataset_size": 1,
            "epochs": 2,
            "batch_size": 1,
            "epoch": [1, 2, 1, 2],
        }
    )
    ordered, heads, bounds = split_trials(curves)
    assert heads["cell_id"].tolist() == ["a", "b"]
    assert bounds.tolist() == [0, 2, 4]
    assert ordered["epoch"].tolist() == [1, 2, 1, 2]
