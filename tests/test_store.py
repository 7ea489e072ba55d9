"""The study directory: the two tables, resume bookkeeping, growing a study, the lock."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gridrun.data import SplitTruth
from gridrun.layout import (
    BASELINES_FILE,
    CURVE_COLUMNS,
    GRID_FILE,
    TRIAL_COLUMNS,
    TRIALS_FILE,
    Status,
)  # fmt: skip
from gridrun.records import EpochReport, TrialRow, WorkerInfo
from gridrun.runs import training_runs, trial_info
from gridrun.spec import parse_grid
from gridrun.storage import Storage, StorageError, read_tables
from gridrun.store import (
    Results,
    StudyDirError,
    StudyLock,
    baselines_record,
    claim_study,
    study_state,
    write_baselines,
)

GRID = parse_grid(
    {
        "name": "tiny",
        "factors": {"image_size": [32], "dataset_size": [8], "epochs": [3], "batch_size": [2, 4]},
        "seeds": [0, 1],
    }
)


def _identity(trial):
    (run,) = training_runs(GRID, [trial])
    return trial_info(GRID, run, trial)


def Results_(path: Path) -> Results:  # noqa: N802 - reads like the class it builds
    return Results(Storage(path))


def _tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables as a reader sees them while the study runs."""
    trials, curves = read_tables(Storage(path))
    assert trials is not None and curves is not None
    return trials, curves


def claim_run_dir(path: Path, resolved: str) -> bool:
    return claim_study(Storage(path), resolved)


def run_status(path: Path):
    return study_state(Storage(path))


def _epoch(epoch: int, val_iou: float, status: Status = Status.OK) -> EpochReport:
    metrics = {
        "train_loss": 1.0 / epoch,
        "train_iou": 0.1 * epoch,
        "val_loss": 2.0 / epoch,
        "val_iou": val_iou,
        "val_dice": 0.5,
        "val_precision": 0.5,
        "val_recall": 0.5,
        "val_pixel_acc": 0.9,
        "lr": 1e-3,
        "step": 4 * epoch,
        "epoch_time_s": 0.5,
        "train_time_s": 0.4 * epoch,
        "train_samples_per_s": 20.0,
        "peak_mem_mb": 100.0 + 10 * (epoch % 2),
    }
    worker = WorkerInfo("10.0.0.7", "a1b2c3", 4321)
    return EpochReport("t", epoch, status, metrics, 1234, 1, "cuda: NVIDIA H200", None, worker)


def _run(
    results: Results, trial, val_ious, statuses=None, status=Status.OK, error=None
) -> TrialRow:
    identity = _identity(trial)
    results.start(trial.trial_id)
    for i, val_iou in enumerate(val_ious, start=1):
        results.add_epoch(identity, _epoch(i, val_iou, (statuses or {}).get(i, Status.OK)))
    return results.finish(identity, status, error)


def test_results_round_trip_through_parquet(tmp_path: Path) -> None:
    trial = GRID.trials()[0]
    results = Results_(tmp_path)
    row = _run(results, trial, [0.5, 0.7, 0.6])
    assert row.status is Status.OK and row.columns["status"] == "ok"
    results.compact()  # what `gridrun run` does when it ends: two tables, no parts
    assert not (tmp_path / "trials.parts").exists() and not (tmp_path / "curves.parts").exists()

    trials = pd.read_parquet(tmp_path / "trials.parquet")
    curves = pd.read_parquet(tmp_path / "curves.parquet")
    assert list(trials.columns[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert list(curves.columns[: len(CURVE_COLUMNS)]) == CURVE_COLUMNS
    assert len(trials) == 1 and len(curves) == 3

    t = trials.iloc[0]
    assert (t["run_id"], t["cell_id"], t["seed"]) == (trial.trial_id, trial.cell.cell_id, 0)
    assert (t["image_size"], t["dataset_size"], t["batch_size"]) == (32, 8, 2)
    # the best point over training, not the last
    assert t["best_val_iou"] == pytest.approx(0.7) and t["best_epoch"] == 2
    assert t["final_val_iou"] == pytest.approx(0.6)
    assert t["final_train_loss"] == pytest.approx(1 / 3)
    assert t["steps"] == 12
    assert t["train_time_s"] == pytest.approx(1.2)
    assert t["peak_mem_mb"] == pytest.approx(110.0)
    assert t["params"] == 1234 and (t["node_ip"], t["node_id"]) == ("10.0.0.7", "a1b2c3")
    # the device the run trained on: a trial column, not repeated on every curve row
    assert t["device"] == "cuda: NVIDIA H200" and "device" not in curves
    assert t["training_run"] == trial.trial_id
    assert t["started_at"] <= t["finished_at"]

    assert curves["epoch"].tolist() == [1, 2, 3]
    assert curves["val_iou"].tolist() == pytest.approx([0.5, 0.7, 0.6])
    assert set(curves["run_id"]) == {trial.trial_id}
    # the worker's pid and node on each curve row, its address only in the trial's row
    assert set(curves["worker_pid"]) == {4321} and set(curves["node_id"]) == {"a1b2c3"}
    assert "worker_ip" not in curves and "status" not in curves and "params" not in curves
    assert row.columns == {**t.to_dict(), "error": None}


def test_a_nan_epoch_is_never_the_best(tmp_path: Path) -> None:
    row = _run(Results_(tmp_path), GRID.trials()[0], [0.3, math.nan, 0.2])
    assert row.columns["best_val_iou"] == pytest.approx(0.3) and row.columns["best_epoch"] == 1


def test_a_failed_trial_keeps_its_error(tmp_path: Path) -> None:
    row = _run(Results_(tmp_path), GRID.trials()[0], [0.4], status=Status.FAILED, error="OOM")
    assert (row.status, row.error) == (Status.FAILED, "OOM")


def test_resume_skips_final_answers_and_retries_failures(tmp_path: Path) -> None:
    ok, failed, diverged = GRID.trials()[:3]
    results = Results_(tmp_path)
    _run(results, ok, [0.5, 0.6])
    _run(results, failed, [0.5], status=Status.FAILED, error="node lost")
    _run(results, diverged, [0.4, math.nan], statuses={2: Status.DIVERGED},
         status=Status.DIVERGED)
    assert Results_(tmp_path).final_trial_ids() == {ok.trial_id, diverged.trial_id}


def test_a_new_results_reloads_rows_and_lists_only_ok_trials_as_done(tmp_path: Path) -> None:
    first, second, third = GRID.trials()[:3]
    results = Results_(tmp_path)
    _run(results, first, [0.5, 0.6])
    _run(results, second, [0.5], status=Status.FAILED, error="boom")

    reloaded = Results_(tmp_path)
    assert set(reloaded.trials) == {first.trial_id, second.trial_id}
    assert reloaded.final_trial_ids() == {first.trial_id}

    # a resumed run adds to the tables and never drops the earlier rows
    _run(reloaded, third, [0.1, 0.2, 0.3])
    trials, curves = _tables(tmp_path)
    assert set(trials["run_id"]) == {first.trial_id, second.trial_id, third.trial_id}
    assert len(curves) == 2 + 1 + 3


def test_rerunning_a_trial_replaces_its_rows(tmp_path: Path) -> None:
    trial = GRID.trials()[0]
    _run(Results_(tmp_path), trial, [0.1], status=Status.FAILED, error="boom")
    results = Results_(tmp_path)
    _run(results, trial, [0.4, 0.5, 0.6])
    assert Results_(tmp_path).final_trial_ids() == {trial.trial_id}
    trials, curves = _tables(tmp_path)
    assert len(trials) == 1 and len(curves) == 3


def test_a_study_is_resumed_by_its_grid_and_refuses_another(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "tiny"
    assert claim_run_dir(run_dir, GRID.resolved_yaml()) is False
    assert (run_dir / "grid.yaml").read_text() == GRID.resolved_yaml()
    other = GRID.model_copy(update={"train": GRID.train.model_copy(update={"lr": 0.1})})
    # before any trial has finished the directory may still change its grid
    claim_run_dir(run_dir, other.resolved_yaml())
    claim_run_dir(run_dir, GRID.resolved_yaml())

    _run(Results_(run_dir), GRID.trials()[0], [0.5])
    assert claim_run_dir(run_dir, GRID.resolved_yaml()) is False
    with pytest.raises(StudyDirError, match=r"different grid \(train.lr differs") as info:
        claim_run_dir(run_dir, other.resolved_yaml())
    assert str(run_dir) in str(info.value)
    assert (run_dir / "grid.yaml").read_text() == GRID.resolved_yaml()


def test_a_grid_that_only_adds_levels_or_seeds_extends_the_study(tmp_path: Path) -> None:
    claim_run_dir(tmp_path, GRID.resolved_yaml())
    _run(Results_(tmp_path), GRID.trials()[0], [0.5])
    more_seeds = GRID.model_copy(update={"seeds": [0, 1, 2]})
    assert claim_run_dir(tmp_path, more_seeds.resolved_yaml()) is True
    assert (tmp_path / "grid.yaml").read_text() == more_seeds.resolved_yaml()
    factors = {**more_seeds.factors.model_dump(), "epochs": [3, 6]}
    wider = parse_grid({**more_seeds.model_dump(mode="json"), "factors": factors})
    assert claim_run_dir(tmp_path, wider.resolved_yaml()) is True
    # dropping a level is not growing: the rows of that level would be orphaned
    with pytest.raises(StudyDirError, match=r"factors.batch_size differs"):
        narrower = wider.model_dump(mode="json")
        narrower["factors"]["batch_size"] = [2]
        claim_run_dir(tmp_path, parse_grid(narrower).resolved_yaml())
    assert study_state(Storage(tmp_path)).total == 2 * 2 * 3


def test_a_study_written_before_a_new_default_key_resumes_not_extends(tmp_path: Path) -> None:
    # a study's grid.yaml from before data.test_fraction, data.test_size and augment existed
    old = yaml.safe_load(GRID.resolved_yaml())
    del old["data"]["test_fraction"], old["data"]["test_size"], old["augment"]
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    _run(Results_(tmp_path), GRID.trials()[0], [0.5])
    assert claim_run_dir(tmp_path, GRID.resolved_yaml()) is False
    assert (tmp_path / "grid.yaml").read_text() == GRID.resolved_yaml()


def test_claim_run_dir_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        claim_run_dir(path, GRID.resolved_yaml())


def test_run_status_counts_done_not_ok_and_missing(tmp_path: Path) -> None:
    claim_run_dir(tmp_path, GRID.resolved_yaml())
    trials = GRID.trials()
    assert len(trials) == 4
    results = Results_(tmp_path)
    _run(results, trials[0], [0.5])
    _run(results, trials[1], [math.nan], statuses={1: Status.DIVERGED},
         status=Status.DIVERGED)
    _run(results, trials[2], [], status=Status.FAILED, error="worker died")
    state = run_status(tmp_path)
    assert state.total == 4
    assert state.ok == [trials[0].trial_id]
    assert state.not_ok == {
        trials[1].trial_id: ("diverged", None),
        trials[2].trial_id: ("failed", "worker died"),
    }
    assert state.missing == [trials[3].trial_id]


def test_run_status_without_grid_file(tmp_path: Path) -> None:
    with pytest.raises(StudyDirError, match="grid.yaml"):
        run_status(tmp_path)


def test_a_live_lock_is_refused_naming_its_holder_and_a_dead_one_taken_over(tmp_path):
    import json
    import os
    import socket
    import subprocess

    study = Storage(tmp_path)
    with StudyLock(study):
        assert json.loads((tmp_path / "lock.json").read_text())["pid"] == os.getpid()
        # a second driver (another process on this host, alive) is refused by name
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            holder = {"host": socket.gethostname(), "pid": sleeper.pid,
                      "started_at": "2026-01-01T00:00:00+00:00", "heartbeat": 0}  # fmt: skip
            (tmp_path / "lock.json").write_text(json.dumps(holder))
            with pytest.raises(StudyDirError, match=f"process {sleeper.pid} on"):
                StudyLock(study).acquire()
        finally:
            sleeper.kill()
            sleeper.wait()
        # its process is gone: the lock is taken over
        other = StudyLock(study)
        other.acquire()
        assert json.loads((tmp_path / "lock.json").read_text())["pid"] == os.getpid()
        other.release()
    assert not (tmp_path / "lock.json").exists()


def test_a_lock_from_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
    import json
    import time

    study = Storage(tmp_path)
    holder = {"host": "elsewhere", "pid": 1, "started_at": "x", "heartbeat": time.time()}
    (tmp_path / "lock.json").write_text(json.dumps(holder))
    with pytest.raises(StudyDirError, match="process 1 on elsewhere"):
        StudyLock(study).acquire()
    holder["heartbeat"] = time.time() - StudyLock.STALE_S - 1
    (tmp_path / "lock.json").write_text(json.dumps(holder))
    lock = StudyLock(study)
    lock.acquire()
    lock.release()


def test_baselines_of_binary_data_hand_values_and_their_file(tmp_path: Path) -> None:
    # 6 validation images at 10 px: 22% background, 78% foreground, 40 pixels ignored
    splits = {"val": SplitTruth(6, (132, 428), 40), "test": SplitTruth(2, (100, 100), 0)}
    record = baselines_record(splits, 10, 1, 255)
    assert (record["eval_size"], record["num_labels"], record["ignore_index"]) == (10, 2, 255)
    assert record["splits"]["val"] == {"images": 6, "class_pixels": [132, 428],
                                       "ignored_pixels": 40}  # fmt: skip
    assert list(record["predictors"]) == ["all background", "all foreground"]
    fg, bg = record["predictors"]["all foreground"], record["predictors"]["all background"]
    assert fg["val_iou"] == pytest.approx(428 / 560) and fg["val_iou_c0"] == 0.0
    assert fg["val_miou"] == pytest.approx(428 / 1120) and fg["val_recall"] == 1.0
    assert bg["val_iou"] == 0.0 and bg["val_miou"] == pytest.approx(132 / 1120)
    assert bg["val_precision"] is None  # nothing predicted foreground: NaN, written null
    assert fg["test_iou"] == pytest.approx(0.5) and fg["test_pixel_acc"] == pytest.approx(0.5)
    study = Storage(tmp_path)
    write_baselines(study, record)
    text = (tmp_path / BASELINES_FILE).read_text()
    assert "NaN" not in text
    from analysis.baselines import Baselines

    read = Baselines.from_json(text)
    assert read.eval_size == 10 and read.splits["val"].class_pixels == (132, 428)
    assert read.best("val_miou") == ("all foreground", pytest.approx(428 / 1120))
    write_baselines(study, record)  # a resume writes the same file again
    assert (tmp_path / BASELINES_FILE).read_text() == text


def test_baselines_of_multiclass_data_name_every_class() -> None:
    record = baselines_record({"val": SplitTruth(1, (5, 3, 2), 0)}, 4, 3, None)
    assert list(record["predictors"]) == ["all class 0", "all class 1", "all class 2"]
    c1 = record["predictors"]["all class 1"]
    assert [c1[f"val_iou_c{k}"] for k in range(3)] == [0.0, pytest.approx(0.3), 0.0]
    assert c1["val_iou"] == pytest.approx(0.1) and "val_miou" not in c1


FIVE = parse_grid(
    {
        "name": "five",
        "factors": {"image_size": [32], "dataset_size": [8], "epochs": [3], "batch_size": [2],
                    "train.lr": [3e-4, 1e-3], "model.base_channels": [4, 8],
                    "augment": ["none", "flips"]},
        "train": {"lr_scaling": "linear"},
        "nuisance": ["train.lr"],
    }
)  # fmt: skip


def test_each_setting_factor_is_a_column_of_both_tables_with_its_levels_type(tmp_path):
    results = Results_(tmp_path)
    for trial in FIVE.trials():
        (run,) = training_runs(FIVE, [trial])
        identity = trial_info(FIVE, run, trial)
        results.start(trial.trial_id)
        for epoch in (1, 2, 3):
            results.add_epoch(identity, _epoch(epoch, 0.5))
        results.finish(identity, Status.OK, None)
    trials, curves = _tables(tmp_path)
    for table in (trials, curves):
        assert sorted(set(table["train.lr"])) == [3e-4, 1e-3]
        assert sorted(set(table["model.base_channels"])) == [4, 8]
        assert sorted(set(table["augment"])) == ["flips", "none"]
        assert table["train.lr"].dtype == "float64"
        assert table["model.base_channels"].dtype == "int64"
        assert pd.api.types.is_string_dtype(table["augment"])
    cell = "img32_n8_ep3_bs2_augment=flips_model.base_channels=8_train.lr=0.001"
    row = trials.set_index("run_id").loc[f"{cell}_s0"]
    assert (row["train.lr"], row["model.base_channels"], row["augment"]) == (1e-3, 8, "flips")
    assert len(trials) == 8 and len(curves) == 24


def test_a_study_with_setting_factors_extends_by_a_level_not_by_a_new_factor(tmp_path):
    claim_run_dir(tmp_path, FIVE.resolved_yaml())
    _run(Results_(tmp_path), FIVE.trials()[0], [0.5])
    raw = yaml.safe_load(FIVE.resolved_yaml())
    raw["factors"]["train.lr"] = [3e-4, 1e-3, 3e-3]
    assert claim_run_dir(tmp_path, parse_grid(raw).resolved_yaml()) is True
    raw["factors"]["train.optimizer"] = ["adam", "sgd"]
    with pytest.raises(StudyDirError, match=r"factors.train.optimizer differs"):
        claim_run_dir(tmp_path, parse_grid(raw).resolved_yaml())
    state = study_state(Storage(tmp_path))
    assert state.settings["train.lr"] == [3e-4, 1e-3, 3e-3]
    assert state.settings["augment"] == ["flips", "none"]
    assert state.total == 3 * 2 * 2


def test_a_grouped_study_resumes_and_extends_by_a_group(tmp_path):
    raw = yaml.safe_load(GRID.resolved_yaml())
    del raw["factors"]["batch_size"]
    raw["factors"]["grouped"] = [{"batch_size": 2, "train.lr": 3e-4}]
    first = parse_grid(raw)
    claim_run_dir(tmp_path, first.resolved_yaml())
    _run(Results_(tmp_path), first.trials()[0], [0.5])
    assert claim_run_dir(tmp_path, first.resolved_yaml()) is False
    raw["factors"]["grouped"].append({"batch_size": 4, "train.lr": 6e-4})
    assert claim_run_dir(tmp_path, parse_grid(raw).resolved_yaml()) is True


def test_a_study_written_under_the_old_key_names_resumes(tmp_path) -> None:
    grid = parse_grid({"factors": {"image_size": [32], "dataset_size": [8], "epochs": [1],
                                   "batch_size": [4]}})  # fmt: skip
    study = Storage(tmp_path)
    old = grid.resolved_yaml().replace("workers_per_unit", "workers_per_trial")
    old = old.replace("max_concurrent_units", "max_concurrent_trials")
    study.write_text(GRID_FILE, old)
    study.write_text(TRIALS_FILE, "")  # something ran: the grids are compared
    assert claim_study(study, grid.resolved_yaml()) is False
    assert study.read_text(GRID_FILE) == grid.resolved_yaml()


# -- tables that grow by appending -----------------------------------------------------

GRID6 = parse_grid(
    {
        "name": "six",
        "factors": {"image_size": [32], "dataset_size": [8], "epochs": [3], "batch_size": [2, 4]},
        "seeds": [0, 1, 2],
    }
)


@pytest.fixture(params=["local", "s3"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(tmp_path / "study")
    return Storage(request.getfixturevalue("s3_uri"))


class _OldDesign:
    """The tables as the runner wrote them before parts: every row held, both tables
    rewritten from the rows on each finished trial."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.curves: dict[str, list[dict]] = {}

    def tables(self, where: Storage) -> tuple[pd.DataFrame, pd.DataFrame]:
        from gridrun.store import _ordered

        trials = _ordered(list(self.rows.values()), TRIAL_COLUMNS)
        curves = _ordered([r for rows in self.curves.values() for r in rows], CURVE_COLUMNS)
        where.write_parquet("t.parquet", trials.sort_values(["cell_id", "seed"], ignore_index=True))
        where.write_parquet(
            "c.parquet", curves.sort_values(["cell_id", "seed", "epoch"], ignore_index=True)
        )
        return pd.read_parquet(where.local_path("t.parquet")), pd.read_parquet(
            where.local_path("c.parquet")
        )


def _finish(results: Results, old: _OldDesign, trial, reports, status=Status.OK, error=None):
    from gridrun.store import _curve_row

    identity = trial_info(GRID6, training_runs(GRID6, [trial])[0], trial)
    results.start(trial.trial_id)
    for report in reports:
        results.add_epoch(identity, report)
    row = results.finish(identity, status, error)
    old.rows[trial.trial_id] = row.columns
    old.curves[trial.trial_id] = [_curve_row(identity, r) for r in reports]


def _with_extra(report: EpochReport) -> EpochReport:
    return dataclasses.replace(report, metrics={**report.metrics, "val_iou_c2": 0.25})


def test_parts_merged_and_compacted_give_the_old_tables(study, tmp_path, monkeypatch):
    import gridrun.store

    monkeypatch.setattr(Results, "MERGE_PARTS", 2)  # merges at two levels in six trials
    monkeypatch.setattr(gridrun.store, "COMPACT_ROWS", 4)  # curves compact in slices
    t = GRID6.trials()
    old = _OldDesign()
    results = Results(study)
    _finish(results, old, t[0], [_epoch(e, 0.1 * e) for e in (1, 2, 3)])
    _finish(results, old, t[1], [_epoch(1, 0.2)], Status.FAILED, "node lost")
    _finish(results, old, t[2], [], Status.FAILED, "worker died")
    _finish(results, old, t[3], [_with_extra(_epoch(e, 0.3)) for e in (1, 2, 3)])
    # a resumed driver retries the failures: the last row wins, with its own curve only
    results = Results(study)
    assert results.final_trial_ids() == {t[0].trial_id, t[3].trial_id}
    _finish(results, old, t[1], [_epoch(e, 0.4) for e in (1, 2, 3)])
    diverged = [_epoch(1, 0.5), _epoch(2, math.nan, Status.DIVERGED)]
    _finish(results, old, t[2], diverged, Status.DIVERGED)
    _finish(results, old, t[4], [_epoch(e, 0.6) for e in (1, 2, 3)])
    assert len(study.list("trials.parts")) < 7  # merged as they piled up

    want_trials, want_curves = old.tables(Storage(tmp_path / "old"))
    trials, curves = read_tables(study)  # mid-run, as a reader sees it
    pd.testing.assert_frame_equal(trials, want_trials)
    pd.testing.assert_frame_equal(curves, want_curves)
    assert curves.groupby("run_id")["epoch"].apply(list)[t[2].trial_id] == [1, 2]

    results.compact()
    assert study.list("trials.parts") == [] and study.list("curves.parts") == []
    pd.testing.assert_frame_equal(study.read_parquet("trials.parquet"), want_trials)
    pd.testing.assert_frame_equal(study.read_parquet("curves.parquet"), want_curves)
    # a study resumed after compaction appends again and compacts to the same kind of table
    results = Results(study)
    _finish(results, old, t[5], [_epoch(e, 0.7) for e in (1, 2, 3)])
    results.compact()
    want_trials, want_curves = old.tables(Storage(tmp_path / "old"))
    pd.testing.assert_frame_equal(study.read_parquet("trials.parquet"), want_trials)
    pd.testing.assert_frame_equal(study.read_parquet("curves.parquet"), want_curves)


def test_a_part_being_written_is_invisible_to_readers(study):
    import threading

    t = GRID6.trials()
    old = _OldDesign()
    results = Results(study)
    _finish(results, old, t[0], [_epoch(1, 0.1)])
    halfway, go_on = threading.Event(), threading.Event()

    def slow_write(rel: str, data: bytes) -> None:
        def fill(tmp: str) -> None:
            with study._fs.open_output_stream(tmp) as stream:
                stream.write(data[: len(data) // 2])
                halfway.set()
                go_on.wait(30)
                stream.write(data[len(data) // 2 :])

        study._atomic(rel, fill)

    study.write_bytes = slow_write  # type: ignore[method-assign]
    writer = threading.Thread(target=_finish, args=(results, old, t[1], [_epoch(1, 0.2)]))
    writer.start()
    try:
        assert halfway.wait(30)
        trials, curves = read_tables(study)
        assert trials["run_id"].tolist() == [t[0].trial_id] and len(curves) == 1
    finally:
        go_on.set()
        writer.join(30)
    trials, curves = read_tables(study)
    assert sorted(trials["run_id"]) == sorted([t[0].trial_id, t[1].trial_id]) and len(curves) == 2


def test_a_curves_part_without_its_trials_part_is_left_out(tmp_path: Path) -> None:
    # a driver killed between a trial's two writes: the trial reruns and nothing shows
    t = GRID6.trials()
    study = Storage(tmp_path)
    results = Results(study)
    _finish(results, _OldDesign(), t[0], [_epoch(1, 0.1)])
    (part,) = study.list("trials.parts")
    study.delete(f"trials.parts/{part}")
    trials, curves = read_tables(study)
    assert trials is None and len(curves) == 0
    results = Results(study)
    assert results.final_trial_ids() == set()
    _finish(results, _OldDesign(), t[0], [_epoch(e, 0.3) for e in (1, 2)])
    trials, curves = read_tables(study)
    assert trials["run_id"].tolist() == [t[0].trial_id] and curves["epoch"].tolist() == [1, 2]


def test_analysis_and_status_read_a_study_with_parts(study) -> None:
    from analysis.load import load

    claim_study(study, GRID6.resolved_yaml())
    t = GRID6.trials()
    results = Results(study)
    _finish(results, _OldDesign(), t[0], [_epoch(e, 0.1 * e) for e in (1, 2, 3)])
    _finish(results, _OldDesign(), t[1], [_epoch(1, 0.2)], Status.FAILED, "node lost")
    assert study.list("trials.parts") and not study.exists("trials.parquet")

    data = load(study.uri)
    assert data.trials["run_id"].tolist() == [t[0].trial_id, t[1].trial_id]
    assert data.ok["run_id"].tolist() == [t[0].trial_id]
    assert data.curves["epoch"].tolist() == [1, 2, 3]
    assert data.final["final"].tolist() == pytest.approx([0.3])

    state = study_state(study)
    assert (state.total, state.ok) == (6, [t[0].trial_id])
    assert state.not_ok == {t[1].trial_id: ("failed", "node lost")}
    assert state.missing == [x.trial_id for x in t[2:]]
    # a grid may no longer change: trials have rows (in parts)
    other = GRID6.model_copy(update={"train": GRID6.train.model_copy(update={"lr": 0.1})})
    with pytest.raises(StudyDirError, match="different grid"):
        claim_study(study, other.resolved_yaml())
