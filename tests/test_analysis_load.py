from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import (
    AnalysisInputError,
    final_metrics,
    load,
    split_runs,
    split_trials,
    varying_factors,
)
from analysis.synthetic import example_grid, synthetic_tables, write_synthetic_run
from gridrun.layout import TRIAL_ID, Status, cell_id, training_run_id, trial_id
from gridrun.runs import training_runs
from gridrun.spec import parse_grid


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
    assert "StudyData(" in repr(data) and "1 running" in repr(data)


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


def test_status_is_parsed_a_table_without_one_is_ok_and_a_blank_one_is_left_out(tmp_path):
    rows = {"cell_id": ["a", "a", "b"], "seed": [0, 1, 0], "image_size": 64,
            "dataset_size": [100, 100, 200], "epochs": 5, "batch_size": 4,
            "final_val_iou": [0.5, 0.6, 0.7]}  # fmt: skip
    pd.DataFrame(rows).to_parquet(tmp_path / "trials.parquet")
    data = load(tmp_path)  # hand-written, no status column: every trial finished well
    assert list(data.ok["status"]) == [Status.OK] * 3 and data.excluded.empty

    pd.DataFrame({**rows, "status": ["ok", None, "diverged"]}).to_parquet(
        tmp_path / "trials.parquet"
    )
    data = load(tmp_path)
    assert data.ok[["cell_id", "seed"]].values.tolist() == [["a", 0]]
    assert list(data.excluded["status"]) == [Status.FAILED, Status.DIVERGED]
    assert "1 trials have no status: left out as failed." in data.notes
    assert "2 trials left out of the fits (1 failed, 1 diverged)." in data.notes

    pd.DataFrame({**rows, "status": ["ok", "done", "ok"]}).to_parquet(tmp_path / "trials.parquet")
    with pytest.raises(AnalysisInputError, match="unknown status 'done'; known: ok, diverged"):
        load(tmp_path)


def test_grid_file_and_training_runs_are_read(tmp_path: Path):
    trials, curves = synthetic_tables(epochs=(10, 20), seeds=2)
    data = load(write_synthetic_run(tmp_path, trials, curves, example_grid(trials)))
    assert data.grid["factors"]["epochs"] == [10, 20]
    assert data.grid["seeds"] == [0, 1]
    # trials are grouped into the training runs the runner plans for this grid, each named
    # after the trial of its longest cell, and read off that trial's curve
    grid = parse_grid(data.grid)
    runs = training_runs(grid, grid.trials())
    planned = {t.trial_id: run.id for run in runs for t in run.trials}
    _, heads, _, longest = split_runs(data.curves)
    ids = [trial_id(c, s) for c, s in zip(heads["cell_id"], heads["seed"], strict=True)]
    assert dict(zip(ids, heads["training_run"], strict=True)) == planned
    assert {ids[i]: ids[j] for i, j in enumerate(longest)} == planned
    assert dict(zip(data.trials[TRIAL_ID], data.trials["training_run"], strict=True)) == planned
    factors = {"image_size": 64, "dataset_size": 100, "batch_size": 8}
    short, long = cell_id({**factors, "epochs": 10}), cell_id({**factors, "epochs": 20})
    run = training_run_id({**factors, "epochs": 20}, 1)
    assert planned[trial_id(short, 1)] == planned[trial_id(long, 1)] == run
    # a shorter cell's curve is the first epochs of its run's
    shared = data.curves[data.curves["training_run"] == run]
    curve = {c: g.set_index("epoch")["val_iou"] for c, g in shared.groupby("cell_id")}
    assert list(curve[long].index) == list(range(1, 21))
    pd.testing.assert_series_equal(curve[short], curve[long].loc[:10])


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


def test_a_setting_named_under_factors_is_a_factor_of_the_study(tmp_path: Path):
    extra = {"train.lr": (3e-4, 1e-3)}
    trials, curves = synthetic_tables(epochs=(10, 20), seeds=2, extra=extra)
    data = load(write_synthetic_run(tmp_path, trials, curves, example_grid(trials, extra=extra)))
    assert data.grid["factors"]["train.lr"] == [0.0003, 0.001]
    assert data.factors == ("image_size", "dataset_size", "epochs", "batch_size", "train.lr")
    assert sorted(data.final["train.lr"].unique()) == [0.0003, 0.001]
    assert varying_factors(data.final, data.factors)[-1] == "train.lr"
    # ids as the runner writes them: the setting's `_<path>=<level>` piece, and one training
    # run per level of every factor but epochs
    levels = {"image_size": 64, "dataset_size": 100, "batch_size": 8, "train.lr": 0.0003}
    short, long = cell_id({**levels, "epochs": 10}), cell_id({**levels, "epochs": 20})
    assert short == "img64_n100_ep10_bs8_train.lr=0.0003"
    run = data.trials.set_index(TRIAL_ID)["training_run"]
    assert run[trial_id(short, 1)] == run[trial_id(long, 1)] == training_run_id(
        {**levels, "epochs": 20}, 1
    )
    assert data.trials["training_run"].nunique() == 2 * 2 * 2 * 2 * 2
    # the runner, given this grid file, plans the same trials and training runs
    grid = parse_grid(data.grid)
    planned = {t.trial_id: r.id for r in training_runs(grid, grid.trials()) for t in r.trials}
    assert dict(zip(data.trials[TRIAL_ID], data.trials["training_run"], strict=True)) == planned


def test_a_study_without_grid_file_has_the_four_factors(tmp_path: Path, tables):
    data = load(write_synthetic_run(tmp_path, *tables))
    assert data.factors == ("image_size", "dataset_size", "epochs", "batch_size")
