"""The records that cross the runner's seams: what Ray carries comes back as it was sent,
Tune's own keys left out; a run end and a run checkpoint come back from a real study."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from gridrun.layout import Status, latest_checkpoint_path, run_end_path
from gridrun.records import (
    DataRefs,
    EpochReport,
    RunCheckpoint,
    RunEnd,
    RunFailed,
    TrainState,
    WorkerInfo,
    WorkUnitSetup,
    report_from_dict,
    report_to_dict,
)
from gridrun.storage import Storage

RUN = "img32_n8_ep4_bs4_s0"
WORKER = WorkerInfo("10.0.0.7", "a1b2c3", 4321)
EPOCH = EpochReport(
    RUN, 3, Status.OK, {"train_loss": 0.25, "val_iou": 0.625, "step": 12, "val_pixels": 2048},
    1234, 2, "cuda: NVIDIA H200", "predictions/img32_n8_ep4_bs4_s0/epoch_0003.npz", WORKER,
)  # fmt: skip
FAILED = RunFailed(RUN, Status.INFEASIBLE, "OutOfMemoryError: CUDA out of memory", WORKER)
# what Tune adds to every result it hands the driver's callback
TUNE_KEYS = {
    "training_iteration": 3, "trial_id": "a1b2_00000", "done": False, "timestamp": 1.7e9,
    "checkpoint_dir_name": None, "node_ip": "10.0.0.8", "pid": 99, "hostname": "h",
    "time_total_s": 4.5, "config": {"unit_id": "u0"}, "experiment_tag": "0",
}  # fmt: skip


@pytest.mark.parametrize("report", [EPOCH, FAILED, RunFailed(RUN, Status.FAILED, "lost")])
def test_a_report_comes_back_from_tune_as_it_was_sent(report) -> None:
    sent = report_to_dict(report)
    assert report_from_dict({**sent, **TUNE_KEYS}) == report
    # Ray pickles what it carries: plain values only, so any process can read them
    assert pickle.loads(pickle.dumps(sent)) == sent


def test_the_epoch_report_keeps_every_value_and_its_type() -> None:
    back = report_from_dict({**TUNE_KEYS, **report_to_dict(EPOCH)})
    assert isinstance(back, EpochReport)
    assert back.metrics == {"train_loss": 0.25, "val_iou": 0.625, "step": 12, "val_pixels": 2048}
    assert isinstance(back.metrics["step"], int) and back.status is Status.OK
    assert (back.epoch, back.params, back.world_size) == (3, 1234, 2)
    assert back.worker == WorkerInfo("10.0.0.7", "a1b2c3", 4321)
    # Tune's keys of the same name (node_ip, pid) never reach the report
    assert "node_ip" not in back.metrics and "pid" not in back.metrics


def test_a_result_of_tunes_own_is_no_report() -> None:
    assert report_from_dict(TUNE_KEYS) is None


def test_a_run_end_round_trips_through_the_study(tmp_path: Path) -> None:
    study = Storage(tmp_path)
    assert RunEnd.load(study, RUN) is None
    ended = RunEnd(RUN, (EPOCH, FAILED))
    ended.save(study)
    assert (tmp_path / run_end_path(RUN)).is_file()
    assert RunEnd.load(study, RUN) == ended
    # a trainer's failure has no worker to name
    lost = RunEnd(RUN, (RunFailed(RUN, Status.FAILED, "RayTaskError: node died"),))
    lost.save(study)
    assert RunEnd.load(study, RUN) == lost


def test_a_run_checkpoint_round_trips_through_the_study(tmp_path: Path) -> None:
    study = Storage(tmp_path)
    assert RunCheckpoint.load(study, RUN) is None
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    saved = RunCheckpoint(
        model.state_dict(), optimizer.state_dict(), (EPOCH,), TrainState(12, 3.5, 0.75, 3)
    )
    saved.save(study, RUN)
    assert (tmp_path / latest_checkpoint_path(RUN)).is_file()
    back = RunCheckpoint.load(study, RUN)
    assert back is not None
    assert back.history == (EPOCH,) and back.state == TrainState(12, 3.5, 0.75, 3)
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.model[name], tensor), name
    assert back.optimizer["state"][0]["step"] == 1
    torch.testing.assert_close(
        back.optimizer["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_a_fresh_train_state_starts_before_epoch_one() -> None:
    assert TrainState() == TrainState(0, 0.0, math.inf, 0)


def test_a_work_units_setup_travels_under_one_key() -> None:
    setup = WorkUnitSetup("s3://bucket/study", "raise@r:2", DataRefs("val", None, {32: "a32"}))
    config = setup.config("unit")
    assert len(config) == 2
    assert WorkUnitSetup.from_config(pickle.loads(pickle.dumps(config))) == ("unit", setup)
    with pytest.raises(TypeError, match="setup"):
        WorkUnitSetup.from_config({**config, "setup": {"study": "x"}})


def test_a_checkpoint_written_before_records_still_resumes(tmp_path: Path) -> None:
    # note: gridrun before records kept each report flat: metrics, run facts, worker
    flat = {**EPOCH.metrics, "epoch": 3, "status": "ok", "params": 1234, "world_size": 2,
            "device": "cuda: NVIDIA H200", "predictions": EPOCH.predictions,
            "worker_ip": "10.0.0.7", "node_id": "a1b2c3", "worker_pid": 4321,
            "training_run": RUN}  # fmt: skip
    failed = {"status": "infeasible", "error": FAILED.error, "epoch": None,
              "worker_ip": "10.0.0.7", "node_id": "a1b2c3", "worker_pid": 4321,
              "training_run": RUN}  # fmt: skip
    old = {"model": {}, "optimizer": {}, "history": [flat, failed], "step": 12,
           "train_time": 3.5, "first_loss": 0.75, "epoch": 3}  # fmt: skip
    study = Storage(tmp_path)
    path = tmp_path / latest_checkpoint_path(RUN)
    path.parent.mkdir(parents=True)
    torch.save(old, path)
    back = RunCheckpoint.load(study, RUN)
    assert back is not None and back.history == (EPOCH, FAILED)
    assert back.state == TrainState(12, 3.5, 0.75, 3)
