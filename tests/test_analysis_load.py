from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import AnalysisInputError, final_metrics, load_run, varying_factors
from analysis.synthetic import synthetic_tables, write_synthetic_run


@pytest.fixture
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic_tables(
        image_sizes=(64,), dataset_sizes=(100, 200), epochs=(12,), batch_sizes=(8,), seeds=2
    )


def test_missing_trials_table_names_the_file(tmp_path: Path):
    with pytest.raises(AnalysisInputError, match="trials.parquet"):
        load_run(tmp_path)


def test_unreadable_trials_table_names_the_file(tmp_path: Path):
    (tmp_path / "trials.parquet").write_text("not parquet")
    with pytest.raises(AnalysisInputError, match="trials.parquet"):
        load_run(tmp_path)


def test_unknown_metric_is_named(tmp_path: Path, tables):
    run = write_synthetic_run(tmp_path, *tables)
    with pytest.raises(AnalysisInputError, match="'val_bogus'"):
        load_run(run, "val_bogus")


def test_final_metric_is_last_epoch_of_each_finished_ok_trial(tmp_path: Path, tables):
    trials, curves = tables
    trials.loc[0, ["status", "error"]] = ["failed", "CUDA out of memory"]
    trials.loc[0, ["final_val_iou", "best_val_iou"]] = np.nan
    # trial 1 still runs: no trial row yet, only its first 5 epochs
    running = trials.loc[1, "run_id"]
    trials = trials.drop(index=1)
    curves = curves[(curves["run_id"] != running) | (curves["epoch"] <= 5)]
    data = load_run(write_synthetic_run(tmp_path, trials, curves), "val_dice")

    assert list(data.excluded["status"]) == ["failed"]
    assert len(data.running) == 1
    assert any("1 failed" in n for n in data.notes)
    assert any("still running" in n for n in data.notes)
    final = final_metrics(data)
    assert len(final) == len(trials) - 1
    last = curves[curves["epoch"] == 12].set_index(["cell_id", "seed"])["val_dice"]
    got = final.set_index(["cell_id", "seed"])["final"]
    assert got.to_dict() == pytest.approx(last.reindex(got.index).to_dict())
    assert (final["best"] >= final["final"]).all()


def test_hand_written_trials_without_curves_fall_back_to_final_columns(tmp_path: Path):
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
    data = load_run(tmp_path)
    assert any("curves.parquet is missing" in n for n in data.notes)
    final = final_metrics(data)
    assert list(final["final"]) == [0.5, 0.6, 0.7]
    assert varying_factors(final) == ["dataset_size"]
    with pytest.raises(AnalysisInputError, match="val_miou"):
        load_run(tmp_path, "val_miou")
