"""Tracking: what TensorBoard and MLflow hold after a fed study, read back with their own
readers; the overlay picture; errors that must not reach the study."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import api_pb2, metadata

from gridrun.layout import FACTORS, Status
from gridrun.tracking import (
    MlflowTracker,
    Overlay,
    TensorBoardTracker,
    Trackers,
    TrialInfo,
    make_trackers,
    metric_tag,
    overlay_image,
)

HPARAMS = {"lr": 0.001, "model": "unet"}
A = TrialInfo("img32_n8_ep3_bs4_s0", "img32_n8_ep3_bs4", 0,
              {"image_size": 32, "dataset_size": 8, "epochs": 3, "batch_size": 4},
              "img32_n8_bs4_s0", HPARAMS)  # fmt: skip
B = TrialInfo("img64_n8_ep3_bs4_s1", "img64_n8_ep3_bs4", 1,
              {"image_size": 64, "dataset_size": 8, "epochs": 3, "batch_size": 4},
              "img64_n8_bs4_s1", HPARAMS)  # fmt: skip
STATUS = {A: Status.OK, B: Status.DIVERGED}


def _metrics(trial: TrialInfo, epoch: int) -> dict[str, Any]:
    """Exact in float32, distinct per trial and epoch; with entries that are no metric."""
    k = 0 if trial is A else 1
    return {"epoch": epoch, "cell_id": trial.cell_id, "seed": trial.seed, "image_size": 32,
            "train_loss": 1 - epoch / 8 - k / 16, "val_iou": epoch / 8 + k / 16,
            "val_iou_c1": epoch / 4, "lr": 0.5, "diverged": False}  # fmt: skip


def _final(trial: TrialInfo) -> dict[str, Any]:
    return {"best_val_iou": 0.375, "best_epoch": 3, "status": "ok", "error": None,
            "checkpoint": f"checkpoints/{trial.run_id}.pt"}  # fmt: skip


def _overlay(trial: TrialInfo, epoch: int) -> Overlay:
    rng = np.random.default_rng(trial.seed)
    image = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (2, 2, 4, 4), dtype=np.uint8)
    return Overlay(epoch, image, labels[0], labels[1])


def _feed(tracker: Any) -> None:
    """Two trials trained side by side, an overlay at epoch 3, then their ends."""
    for epoch in (1, 2, 3):
        for trial in (A, B):
            overlay = _overlay(trial, epoch) if epoch == 3 else None
            tracker.epoch(trial, _metrics(trial, epoch), overlay)
    for trial in (A, B):
        tracker.end(trial, STATUS[trial], _final(trial))
    tracker.close()


def _events(folder: Path) -> ea.EventAccumulator:
    guidance = {ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0}
    return ea.EventAccumulator(str(folder), size_guidance=guidance).Reload()


def _session(acc: ea.EventAccumulator) -> tuple[dict[str, Any], int]:
    """The HParams plugin's view of a run: the session's hparams and its end status."""
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG])  # fmt: skip
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return hparams, end.status


def test_metric_tag_makes_sections_and_mlflow_safe_names():
    keys = ["train_loss", "val_iou", "val_iou_c1", "lr", "val_", "trainer_x", "val_iou(%)"]
    tags = ["train/loss", "val/iou", "val/iou_c1", "lr", "val_", "trainer_x", "val/iou___"]
    assert [metric_tag(k) for k in keys] == tags


def test_overlay_image_paints_prediction_left_and_truth_right():
    image = np.array([[[10, 20, 30], [40, 50, 60]], [[100, 100, 100], [255, 255, 255]]],
                     dtype=np.uint8)  # fmt: skip
    truth = np.array([[1, 0], [255, 2]], dtype=np.uint8)  # 255: ignored, not painted
    pred = np.array([[0, 1], [3, 0]], dtype=np.uint8)
    expected = np.array([
        [[10, 20, 30], [147, 25, 30], [5, 137, 15], [40, 50, 60]],
        [[177, 50, 50], [255, 255, 255], [100, 100, 100], [127, 255, 127]],
    ], dtype=np.uint8)  # fmt: skip
    np.testing.assert_array_equal(overlay_image(image, truth, pred), expected)
    gray = image[..., 0]
    np.testing.assert_array_equal(
        overlay_image(gray, truth, pred), overlay_image(np.stack([gray] * 3, -1), truth, pred)
    )
    with pytest.raises(ValueError, match="differ"):
        overlay_image(image, truth[:1], pred)


def test_tensorboard_holds_scalars_overlays_and_one_hparams_session_per_trial(tmp_path):
    uploaded: list[Path] = []
    _feed(TensorBoardTracker(tmp_path, upload=uploaded.append))

    # one folder per trial and nothing nested: one HParams row per trial
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("**/")) == [
        ".", A.run_id, B.run_id]  # fmt: skip
    assert uploaded == [tmp_path / A.run_id, tmp_path / B.run_id]
    for trial in (A, B):
        acc = _events(tmp_path / trial.run_id)
        assert set(acc.Tags()["scalars"]) == {
            "train/loss", "val/iou", "val/iou_c1", "lr", "trial/best_val_iou",
            "trial/best_epoch"}  # fmt: skip
        fed = [(e, _metrics(trial, e)["val_iou"]) for e in (1, 2, 3)]
        assert [(s.step, s.value) for s in acc.Scalars("val/iou")] == fed
        assert [(s.step, s.value) for s in acc.Scalars("trial/best_val_iou")] == [(3, 0.375)]

        overlay = _overlay(trial, 3)
        for i in range(2):
            (shown,) = acc.Images(f"overlay/{i}")
            assert (shown.step, shown.width, shown.height) == (3, 8, 4)
            picture = np.asarray(Image.open(io.BytesIO(shown.encoded_image_string)))
            want = overlay_image(overlay.image[i], overlay.truth[i], overlay.pred[i])
            np.testing.assert_array_equal(picture, want)

        hparams, status = _session(acc)
        assert hparams == {**trial.factors, "seed": trial.seed, **HPARAMS}
        assert set(FACTORS) <= set(hparams)
        assert status == (api_pb2.STATUS_SUCCESS if trial is A else api_pb2.STATUS_FAILURE)


def test_tensorboard_retry_replaces_and_resume_continues_earlier_events(tmp_path):
    first = TensorBoardTracker(tmp_path)
    for epoch in (1, 2):
        first.epoch(A, _metrics(A, epoch), None)
    first.end(A, Status.FAILED, {})
    # note: TensorBoard reads a folder's event files in name order, and a name holds the
    # second it was opened, then a per-process counter compared as text ("10" < "9"):
    # attempts a second apart, as real reruns are, keep their order
    time.sleep(1.05)
    retry = TensorBoardTracker(tmp_path)  # a rerun retries the failed trial afresh
    retry.epoch(A, {**_metrics(A, 1), "val_iou": 0.875}, None)
    retry.epoch(A, {**_metrics(A, 2), "val_iou": 0.9375}, None)
    retry.close()  # the driver stops during epoch 2's checkpoint: epoch 2 is redone
    time.sleep(1.05)
    resume = TensorBoardTracker(tmp_path)  # the next rerun resumes from epoch 2
    for epoch in (2, 3):
        resume.epoch(A, _metrics(A, epoch), None)
    resume.end(A, Status.OK, {})

    acc = _events(tmp_path / A.run_id)
    want = [(1, 0.875), (2, _metrics(A, 2)["val_iou"]), (3, _metrics(A, 3)["val_iou"])]
    assert [(s.step, s.value) for s in acc.Scalars("val/iou")] == want
    assert _session(acc)[1] == api_pb2.STATUS_SUCCESS


@pytest.mark.filterwarnings("ignore:The ``noload`` loader:DeprecationWarning")  # mlflow's own
def test_mlflow_holds_one_run_per_trial_with_params_metrics_and_status(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _feed(MlflowTracker(uri, "quick"))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runs = mlflow.search_runs(experiment_names=["quick"]).set_index("tags.mlflow.runName")
    assert sorted(runs.index) == [A.run_id, B.run_id]
    client = mlflow.MlflowClient(uri)
    for trial in (A, B):
        run = runs.loc[trial.run_id]
        params = {k: run[f"params.{k}"] for k in [*FACTORS, "seed", "lr", "model"]}
        assert params == {k: str(v) for k, v in trial.params.items()}
        assert (run["tags.status"], run["tags.training_run"], run["tags.cell_id"]) == (
            STATUS[trial].value, trial.training_run, trial.cell_id)  # fmt: skip
        assert run["tags.checkpoint"] == f"checkpoints/{trial.run_id}.pt"
        assert run["status"] == ("FINISHED" if trial is A else "FAILED")
        for key in ("val_iou", "train_loss"):
            history = client.get_metric_history(run["run_id"], metric_tag(key))
            fed = [(e, _metrics(trial, e)[key]) for e in (1, 2, 3)]
            assert sorted((m.step, m.value) for m in history) == fed
        assert run["metrics.trial/best_val_iou"] == 0.375


def test_mlflow_accepts_a_plain_folder(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # undone after the test
    tracker = MlflowTracker(str(tmp_path / "mlruns"), "quick")
    tracker.epoch(A, _metrics(A, 1), None)
    tracker.close()
    (run,) = mlflow.MlflowClient(str(tmp_path / "mlruns")).search_runs(
        [tracker._experiment_id])  # fmt: skip
    assert (run.info.run_name, run.info.status) == (A.run_id, "KILLED")
    assert run.data.metrics["val/iou"] == _metrics(A, 1)["val_iou"]


class _Recorder:
    def __init__(self):
        self.calls: list[str] = []

    def epoch(self, trial, metrics, overlay):
        self.calls.append(f"epoch {metrics['epoch']}")

    def end(self, trial, status, final):
        self.calls.append(f"end {status}")

    def close(self):
        self.calls.append("close")


class _Broken:
    def epoch(self, trial, metrics, overlay):
        raise OSError("disk full")

    end = close = epoch


def test_trackers_swallow_errors_warn_once_and_keep_feeding_the_others():
    recorder = _Recorder()
    trackers = Trackers([_Broken(), recorder])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trackers.epoch(A, {"epoch": 1}, None)
        trackers.epoch(A, {"epoch": 2}, None)
        trackers.end(A, "ok", {})
        trackers.close()
    assert recorder.calls == ["epoch 1", "epoch 2", "end ok", "close"]
    assert [str(w.message) for w in caught] == [
        "_Broken.epoch failed, the study goes on (later errors of this tracker are only "
        "counted): OSError('disk full')",
        "_Broken: 4 errors in all",
    ]


def test_make_trackers_builds_what_is_asked_for(tmp_path):
    assert make_trackers(None, None, "quick").trackers == []
    (tensorboard,) = make_trackers(tmp_path, None, "quick").trackers
    assert isinstance(tensorboard, TensorBoardTracker) and tensorboard.logdir == tmp_path
