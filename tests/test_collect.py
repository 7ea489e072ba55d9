"""Reports of training runs in, rows of (cell, seed) trials out: each cell reads the shared
curve at its own epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gridrun.collect import Collector
from gridrun.layout import Status
from gridrun.records import EpochReport, RunFailed, WorkerInfo, report_from_dict, report_to_dict
from gridrun.runs import training_runs, trial_info
from gridrun.spec import parse_grid
from gridrun.storage import Storage, read_tables
from gridrun.store import Results

GRID = parse_grid(
    {"factors": {"image_size": [32], "dataset_size": [8], "epochs": [1, 2, 4],
                 "batch_size": [4]}, "seeds": [0]}
)  # fmt: skip
RUN = "img32_n8_ep4_bs4_s0"


def _collector(tmp_path: Path) -> Collector:
    runs = training_runs(GRID, GRID.trials())
    trials = {r.id: [trial_info(GRID, r, t) for t in r.trials] for r in runs}
    return Collector(Results(Storage(tmp_path)), trials)


def _tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables as a reader sees them while the study runs."""
    trials, curves = read_tables(Storage(path))
    assert trials is not None and curves is not None
    return trials, curves


WORKER = WorkerInfo("10.0.0.7", "a1b2c3", 4321)


def _report(epoch, val_iou, status=Status.OK) -> EpochReport:
    metrics = {"val_iou": val_iou, "val_loss": 1 / epoch, "train_loss": 1 / epoch,
               "step": 2 * epoch, "train_time_s": 0.5 * epoch}  # fmt: skip
    return EpochReport(RUN, epoch, status, metrics, 1234, 1, "cpu", None, WORKER)


def _through_tune(report: EpochReport) -> EpochReport:
    """The report as the driver's Tune callback gets it: a dict with Tune's keys added."""
    tune_keys = {"training_iteration": report.epoch, "trial_id": "x", "done": False,
                 "checkpoint_dir_name": None, "node_ip": "10.0.0.8"}  # fmt: skip
    back = report_from_dict({**report_to_dict(report), **tune_keys})
    assert isinstance(back, EpochReport)
    return back


def test_each_cell_reads_the_shared_curve_at_its_own_epoch(tmp_path):
    collector = _collector(tmp_path)
    for epoch, iou in enumerate([0.2, 0.6, 0.5, 0.7], start=1):
        collector.report(_through_tune(_report(epoch, iou)))
    trials = _tables(tmp_path)[0].set_index("epochs")
    curves = _tables(tmp_path)[1]
    assert trials["final_val_iou"].to_dict() == {1: 0.2, 2: 0.6, 4: 0.7}
    # best so far up to its own epoch, never beyond it
    assert trials["best_val_iou"].to_dict() == {1: 0.2, 2: 0.6, 4: 0.7}
    assert trials.loc[2, "best_epoch"] == 2 and trials.loc[4, "best_epoch"] == 4
    assert trials["steps"].to_dict() == {1: 2, 2: 4, 4: 8}
    assert trials["checkpoint"].to_dict() == {
        e: f"checkpoints/img32_n8_ep{e}_bs4_s0.pt" for e in (1, 2, 4)
    }
    assert (trials["training_run"] == RUN).all() and (trials["status"] == "ok").all()
    assert curves.groupby("epochs")["epoch"].apply(list).to_dict() == {
        1: [1], 2: [1, 2], 4: [1, 2, 3, 4]
    }
    # Tune's bookkeeping is not a column; the worker's pid and node are
    assert not {"training_iteration", "trial_id", "checkpoint_dir_name"} & set(curves)
    assert (curves["worker_pid"] == 4321).all() and (trials["node_ip"] == "10.0.0.7").all()


def test_the_trials_in_progress_are_written_for_status(tmp_path):
    import json

    collector = _collector(tmp_path)
    collector.report(_report(1, 0.2))
    progress = json.loads((tmp_path / "progress.json").read_text())
    # the 1-epoch cell finished at epoch 1; the two longer ones are running
    assert progress["running"] == {"img32_n8_ep2_bs4_s0": 1, "img32_n8_ep4_bs4_s0": 1}
    collector.report(_report(2, 0.3))  # a cell finished: written at once
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["running"] == {"img32_n8_ep4_bs4_s0": 2}


def test_a_run_that_diverges_ends_its_longer_cells_as_diverged(tmp_path):
    collector = _collector(tmp_path)
    collector.report(_report(1, 0.3))
    collector.report(_report(2, float("nan"), status=Status.DIVERGED))
    trials = _tables(tmp_path)[0].set_index("epochs")
    assert trials["status"].to_dict() == {1: "ok", 2: "diverged", 4: "diverged"}
    curves = _tables(tmp_path)[1]
    assert len(curves[curves["epochs"] == 4]) == 2  # its curve up to the divergence


def test_a_run_that_fails_ends_its_open_cells_with_the_error(tmp_path):
    collector = _collector(tmp_path)
    collector.report(_report(1, 0.3))
    collector.report(
        RunFailed(RUN, Status.INFEASIBLE, "OutOfMemoryError: CUDA out of memory", WORKER)
    )
    trials = _tables(tmp_path)[0].set_index("epochs")
    assert trials["status"].to_dict() == {1: "ok", 2: "infeasible", 4: "infeasible"}
    assert trials.loc[4, "error"].startswith("OutOfMemoryError")


def test_an_epoch_reported_again_after_a_restart_is_kept_once(tmp_path):
    collector = _collector(tmp_path)
    for epoch in (1, 2, 2, 3, 4):
        collector.report(_report(epoch, 0.1 * epoch))
    curves = _tables(tmp_path)[1]
    assert curves[curves["epochs"] == 4]["epoch"].tolist() == [1, 2, 3, 4]


def test_a_work_unit_that_ends_early_fails_the_runs_it_never_reported(tmp_path):
    collector = _collector(tmp_path)
    collector.start([RUN])
    collector.report(_report(1, 0.3))
    collector.lost([RUN], "node lost")
    trials = _tables(tmp_path)[0].set_index("epochs")
    assert trials["status"].to_dict() == {1: "ok", 2: "failed", 4: "failed"}
    assert trials.loc[2, "error"] == "node lost"
