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
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
    api_pb2,
    backend_context,
    get_experiment,
    list_session_groups,
    metadata,
)

from gridrun.layout import FACTORS, Status
from gridrun.painting import paint_overlay
from gridrun.records import EpochReport, TrialRow, WorkerInfo
from gridrun.storage import Storage
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


def _trial(cell_id: str, seed: int, epochs: int, training_run: str | None = None) -> TrialInfo:
    """A trial of cell `cell_id`; alone it is its own training run, named like it."""
    factors = {"image_size": 32, "dataset_size": 8, "epochs": epochs, "batch_size": 4}
    run_id = f"{cell_id}_s{seed}"
    return TrialInfo(run_id, cell_id, seed, factors, training_run or run_id, HPARAMS)


A = _trial("img32_n8_ep3_bs4", 0, 3)
B = _trial("img64_n8_ep3_bs4", 1, 3)
# one training run read by two cells: trained to 4 epochs, read at 2 and at 4
LONG = _trial("img32_n8_ep4_bs4", 0, 4)
SHORT = _trial("img32_n8_ep2_bs4", 0, 2, training_run=LONG.trial_id)
STATUS = {A: Status.OK, B: Status.DIVERGED, SHORT: Status.OK, LONG: Status.OK}
# what a worker reports beside its metrics, and the trials row's counts and ids
BOOKKEEPING = {"step": 6, "params": 1_928_322, "world_size": 2, "worker_pid": 4321,
               "train_pixels": 8192, "val_pixels": 2048, "worker_ip": "10.0.0.7",
               "node_id": "a1b2c3"}  # fmt: skip
METRIC_TAGS = {"train/loss", "val/iou", "val/miou", "val/iou_c1", "lr", "epoch_time_s",
               "train/samples_per_s", "peak_mem_mb"}  # fmt: skip
FINAL_TAGS = ["trial/final_val_iou", "trial/best_val_iou", "trial/final_val_miou",
              "trial/best_val_miou", "trial/final_train_loss", "trial/best_epoch",
              "trial/train/time_s"]  # fmt: skip


def _metrics(trial: TrialInfo, epoch: int) -> dict[str, Any]:
    """Exact in float32, distinct per training run and epoch; with entries that are no
    metric (identity, bookkeeping, a flag)."""
    k = {A.training_run: 0, B.training_run: 1, LONG.training_run: 2}[trial.training_run]
    return {"epoch": epoch, "cell_id": trial.cell_id, "seed": trial.seed, "image_size": 32,
            "train_loss": 1 - epoch / 8 - k / 16, "val_iou": epoch / 8 + k / 16,
            "val_miou": epoch / 16, "val_iou_c1": epoch / 4, "lr": 0.5,
            "epoch_time_s": 0.25, "train_samples_per_s": 32.0, "peak_mem_mb": 512.0,
            "diverged": False, **BOOKKEEPING}  # fmt: skip


def _report(trial: TrialInfo, epoch: int, **changed: float) -> EpochReport:
    """`_metrics` as the worker reports them: the run's fields beside the epoch's values
    (which keep the identity entries and the flag, to be skipped by the tracker)."""
    values = {**_metrics(trial, epoch), **changed}
    b = BOOKKEEPING
    fields = {"epoch", "cell_id", "params", "world_size", "worker_pid", "worker_ip", "node_id"}
    metrics = {k: v for k, v in values.items() if k not in fields}
    worker = WorkerInfo(b["worker_ip"], b["node_id"], b["worker_pid"])
    return EpochReport(trial.training_run, epoch, Status.OK, metrics, b["params"],
                       b["world_size"], "cpu", None, worker)  # fmt: skip


def _final(trial: TrialInfo) -> dict[str, Any]:
    """The trials row at the trial's own epoch, its numbers in the table's order."""
    last = _metrics(trial, trial.factors["epochs"])
    return {**trial.row(), "status": "ok", "error": None, "final_val_iou": last["val_iou"],
            "final_train_loss": last["train_loss"], "best_val_iou": last["val_iou"],
            "best_epoch": trial.factors["epochs"], "steps": 6, "train_time_s": 1.5,
            "params": 1_928_322, "node_ip": "10.0.0.7", "node_id": None,
            "final_val_miou": last["val_miou"], "best_val_miou": last["val_miou"],
            "checkpoint": f"checkpoints/{trial.trial_id}.pt"}  # fmt: skip


def _overlay(trial: TrialInfo, epoch: int) -> Overlay:
    rng = np.random.default_rng(trial.seed)
    image = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (2, 2, 4, 4), dtype=np.uint8)
    return Overlay(epoch, image, labels[0], labels[1])


def _feed(tracker: Any, runs: tuple[tuple[TrialInfo, ...], ...] = ((A,), (B,))) -> None:
    """Training runs trained side by side, as the collector feeds them: each epoch goes
    to every trial of the run whose cell reaches it (shortest first), a trial ends at its
    own epoch; overlays at epoch 3 and at each cell's own epoch."""
    for epoch in range(1, 1 + max(t.factors["epochs"] for run in runs for t in run)):
        for run in runs:
            stops = {t.factors["epochs"] for t in run}
            overlay = _overlay(run[-1], epoch) if epoch == 3 or epoch in stops else None
            for trial in run:
                if trial.factors["epochs"] >= epoch:
                    tracker.epoch(trial, _report(trial, epoch), overlay)
                if trial.factors["epochs"] == epoch:
                    row = TrialRow(STATUS[trial], None, _final(trial))
                    tracker.end(trial, STATUS[trial], row)
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
    keys = ["train_loss", "val_iou", "val_iou_c1", "test_iou", "lr", "val_", "trainer_x",
            "val_iou(%)"]  # fmt: skip
    tags = ["train/loss", "val/iou", "val/iou_c1", "test/iou", "lr", "val_", "trainer_x",
            "val/iou___"]  # fmt: skip
    assert [metric_tag(k) for k in keys] == tags


def test_overlay_image_shows_the_image_left_and_the_reports_overlay_right():
    image = np.array([[[10, 20, 30], [40, 50, 60]], [[100, 100, 100], [255, 255, 255]]],
                     dtype=np.uint8)  # fmt: skip
    truth = np.array([[1, 0], [255, 2]], dtype=np.uint8)  # 255: ignored, not painted
    pred = np.array([[0, 1], [3, 0]], dtype=np.uint8)
    # (0, 0) a false negative, (0, 1) a false positive, (1, 1) a false negative
    expected = np.array([
        [[10, 20, 30], [40, 50, 60], [4, 70, 154], [158, 22, 27]],
        [[100, 100, 100], [255, 255, 255], [100, 100, 100], [115, 175, 255]],
    ], dtype=np.uint8)  # fmt: skip
    np.testing.assert_array_equal(overlay_image(image, truth, pred, 255), expected)
    np.testing.assert_array_equal(
        overlay_image(image, truth, pred, 255)[:, 2:], paint_overlay(image, truth, pred, 255)
    )
    gray = image[..., 0]
    np.testing.assert_array_equal(
        overlay_image(gray, truth, pred), overlay_image(np.stack([gray] * 3, -1), truth, pred)
    )
    with pytest.raises(ValueError, match="differ"):
        overlay_image(image, truth[:1], pred)


def _hparams_backend(logdir: Path) -> tuple[api_pb2.Experiment, list[api_pb2.SessionGroup]]:
    """What TensorBoard's HParams dashboard gets from `logdir`: its experiment (columns in
    order) and its session groups (rows), through the plugin's own request handlers."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    backend = backend_context.Context(base_plugin.TBContext(data_provider=provider))
    request = context.RequestContext()
    experiment = get_experiment.Handler(
        request, backend, "", api_pb2.GetExperimentRequest()).run()  # fmt: skip
    statuses = [api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    rows = api_pb2.ListSessionGroupsRequest(slice_size=100, allowed_statuses=statuses)
    groups = list_session_groups.Handler(request, backend, "", rows).run().session_groups
    return experiment, list(groups)


def test_tensorboard_holds_scalars_overlays_and_one_hparams_session_per_trial(tmp_path):
    uploaded: list[Path] = []
    _feed(TensorBoardTracker(tmp_path, upload=uploaded.append))

    # one folder per trial and nothing nested: one HParams row per trial
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("**/")) == [
        ".", A.trial_id, B.trial_id]  # fmt: skip
    (experiment,) = tmp_path.glob("events.out.tfevents.*")  # the HParams columns
    assert uploaded == [tmp_path / A.trial_id, experiment, tmp_path / B.trial_id]
    for trial in (A, B):
        acc = _events(tmp_path / trial.trial_id)
        assert set(acc.Tags()["scalars"]) == METRIC_TAGS | set(FINAL_TAGS)
        fed = [(e, _metrics(trial, e)["val_iou"]) for e in (1, 2, 3)]
        assert [(s.step, s.value) for s in acc.Scalars("val/iou")] == fed
        assert [(s.step, s.value) for s in acc.Scalars("trial/best_val_iou")] == [
            (3, _final(trial)["best_val_iou"])]  # fmt: skip

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


def test_tensorboard_scalars_hold_metrics_only(tmp_path):
    _feed(TensorBoardTracker(tmp_path), runs=((A,),))
    tags = set(_events(tmp_path / A.trial_id).Tags()["scalars"])
    bookkeeping = {metric_tag(k) for k in BOOKKEEPING} | {
        f"trial/{k}" for k in ("steps", "params", "lr", "seed", "epochs", "node_ip")}
    assert tags == METRIC_TAGS | set(FINAL_TAGS) and not tags & bookkeeping


def test_tensorboard_writes_a_shared_runs_curve_once(tmp_path):
    _feed(TensorBoardTracker(tmp_path), runs=((SHORT, LONG), (A,)))

    curve: list[tuple[str, str, int]] = []  # (folder, tag, step) of every epoch scalar
    for trial in (SHORT, LONG):
        acc = _events(tmp_path / trial.trial_id)
        for tag in acc.Tags()["scalars"]:
            if not tag.startswith("trial/"):
                curve += [(trial.trial_id, tag, s.step) for s in acc.Scalars(tag)]
    # each epoch of the run once, in the folder named like the run (its longest trial)
    assert sorted(curve) == sorted((LONG.trial_id, t, e) for t in METRIC_TAGS for e in (1, 2, 3, 4))
    assert [(s.step, s.value) for s in _events(tmp_path / LONG.trial_id).Scalars("val/iou")] == [
        (e, _metrics(LONG, e)["val_iou"]) for e in (1, 2, 3, 4)]  # fmt: skip

    short = _events(tmp_path / SHORT.trial_id)
    assert short.Tags()["images"] == []
    assert sorted(_events(tmp_path / LONG.trial_id).Tags()["images"]) == ["overlay/0", "overlay/1"]
    for trial in (SHORT, LONG):  # each trial: its own numbers at its own epoch, and session
        acc, epochs = _events(tmp_path / trial.trial_id), trial.factors["epochs"]
        assert [(s.step, s.value) for s in acc.Scalars("trial/final_val_iou")] == [
            (epochs, _metrics(trial, epochs)["val_iou"])]  # fmt: skip
        assert _session(acc) == ({**trial.factors, "seed": 0, **HPARAMS}, api_pb2.STATUS_SUCCESS)


def test_hparams_table_lists_the_headline_metric_first_and_one_row_per_trial(tmp_path):
    _feed(TensorBoardTracker(tmp_path), runs=((SHORT, LONG), (A,), (B,)))
    experiment, groups = _hparams_backend(tmp_path)

    assert [m.name.tag for m in experiment.metric_infos] == FINAL_TAGS
    # the factors and the seed are the first columns shown
    assert [h.name for h in experiment.hparam_infos][:5] == sorted([*FACTORS, "seed"])
    rows = {g.name: {m.name.tag: (m.training_step, m.value) for m in g.metric_values}
            for g in groups}  # fmt: skip
    assert sorted(rows) == sorted(t.trial_id for t in STATUS)
    for trial in STATUS:
        epochs = trial.factors["epochs"]
        assert rows[trial.trial_id]["trial/final_val_iou"] == (
            epochs, _metrics(trial, epochs)["val_iou"])  # fmt: skip
        assert set(rows[trial.trial_id]) == set(FINAL_TAGS)


def test_tensorboard_retry_replaces_and_resume_continues_earlier_events(tmp_path):
    first = TensorBoardTracker(tmp_path)
    for epoch in (1, 2):
        first.epoch(A, _report(A, epoch), None)
    first.end(A, Status.FAILED, TrialRow(Status.FAILED, None, {}))
    # note: TensorBoard reads a folder's event files in name order, and a name holds the
    # second it was opened, then a per-process counter compared as text ("10" < "9"):
    # attempts a second apart, as real reruns are, keep their order
    time.sleep(1.05)
    retry = TensorBoardTracker(tmp_path)  # a rerun retries the failed trial afresh
    retry.epoch(A, _report(A, 1, val_iou=0.875), None)
    retry.epoch(A, _report(A, 2, val_iou=0.9375), None)
    retry.close()  # the driver stops during epoch 2's checkpoint: epoch 2 is redone
    time.sleep(1.05)
    resume = TensorBoardTracker(tmp_path)  # the next rerun resumes from epoch 2
    for epoch in (2, 3):
        resume.epoch(A, _report(A, epoch), None)
    resume.end(A, Status.OK, TrialRow(Status.OK, None, {}))

    acc = _events(tmp_path / A.trial_id)
    want = [(1, 0.875), (2, _metrics(A, 2)["val_iou"]), (3, _metrics(A, 3)["val_iou"])]
    assert [(s.step, s.value) for s in acc.Scalars("val/iou")] == want
    assert _session(acc)[1] == api_pb2.STATUS_SUCCESS


def test_a_rerun_replaces_the_hparams_experiment(tmp_path):
    for _ in range(2):
        _feed(TensorBoardTracker(tmp_path), runs=((A,),))
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    experiment, _ = _hparams_backend(tmp_path)
    assert [m.name.tag for m in experiment.metric_infos] == FINAL_TAGS


@pytest.mark.filterwarnings("ignore:The ``noload`` loader:DeprecationWarning")  # mlflow's own
def test_mlflow_holds_one_run_per_trial_with_params_metrics_and_status(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _feed(MlflowTracker(uri, "quick"))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runs = mlflow.search_runs(experiment_names=["quick"]).set_index("tags.mlflow.runName")
    assert sorted(runs.index) == [A.trial_id, B.trial_id]
    client = mlflow.MlflowClient(uri)
    for trial in (A, B):
        run = runs.loc[trial.trial_id]
        params = {k: run[f"params.{k}"] for k in [*FACTORS, "seed", "lr", "model"]}
        assert params == {k: str(v) for k, v in trial.params.items()}
        assert (run["tags.status"], run["tags.training_run"], run["tags.cell_id"]) == (
            STATUS[trial].value, trial.training_run, trial.cell_id)  # fmt: skip
        assert run["tags.checkpoint"] == f"checkpoints/{trial.trial_id}.pt"
        assert run["status"] == ("FINISHED" if trial is A else "FAILED")
        for key in ("val_iou", "train_loss"):
            history = client.get_metric_history(run["run_id"], metric_tag(key))
            fed = [(e, _metrics(trial, e)[key]) for e in (1, 2, 3)]
            assert sorted((m.step, m.value) for m in history) == fed
        assert run["metrics.trial/best_val_iou"] == _final(trial)["best_val_iou"]


def test_mlflow_accepts_a_plain_folder(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # undone after the test
    tracker = MlflowTracker(str(tmp_path / "mlruns"), "quick")
    tracker.epoch(A, _report(A, 1), None)
    tracker.close()
    (run,) = mlflow.MlflowClient(str(tmp_path / "mlruns")).search_runs(
        [tracker._experiment_id])  # fmt: skip
    assert (run.info.run_name, run.info.status) == (A.trial_id, "KILLED")
    assert run.data.metrics["val/iou"] == _metrics(A, 1)["val_iou"]


class _Recorder:
    def __init__(self):
        self.calls: list[str] = []

    def epoch(self, trial, report, overlay):
        self.calls.append(f"epoch {report.epoch}")

    def end(self, trial, status, final):
        self.calls.append(f"end {status}")

    def close(self):
        self.calls.append("close")


class _Broken:
    def epoch(self, trial, report, overlay):
        raise OSError("disk full")

    end = close = epoch


def test_trackers_swallow_errors_warn_once_and_keep_feeding_the_others():
    recorder = _Recorder()
    trackers = Trackers([_Broken(), recorder])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trackers.epoch(A, _report(A, 1), None)
        trackers.epoch(A, _report(A, 2), None)
        trackers.end(A, Status.OK, TrialRow(Status.OK, None, {}))
        trackers.close()
    assert recorder.calls == ["epoch 1", "epoch 2", "end ok", "close"]
    assert [str(w.message) for w in caught] == [
        "_Broken.epoch failed, the study goes on (later errors of this tracker are only "
        "counted): OSError('disk full')",
        "_Broken: 4 errors in all",
    ]


def test_make_trackers_feeds_tensorboard_and_mlflow_where_asked(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # the tracker's setting, undone

    nothing = make_trackers(None, None, "quick")
    _feed(nothing)
    assert nothing.trackers == [] and list(tmp_path.iterdir()) == []

    # as `gridrun run` does for a study behind a URI: event files written in a scratch
    # folder, each trial's copied to the study once complete
    study = Storage(tmp_path / "study")
    uploaded: list[Path] = []

    def upload(folder: Path) -> None:
        uploaded.append(folder)
        study.upload(folder, f"tensorboard/{folder.name}")

    uri = str(tmp_path / "mlruns")  # note: a folder store starts faster than sqlite
    trackers = make_trackers(tmp_path / "tb", uri, "quick", upload=upload, ignore_index=1)
    _feed(trackers, runs=((A,),))
    assert uploaded[0] == tmp_path / "tb" / A.trial_id
    acc = _events(tmp_path / "study" / "tensorboard" / A.trial_id)  # the study's copy
    fed = [(e, _metrics(A, e)["val_iou"]) for e in (1, 2, 3)]
    assert [(s.step, s.value) for s in acc.Scalars("val/iou")] == fed
    assert set(acc.Tags()["scalars"]) == METRIC_TAGS | set(FINAL_TAGS)
    (shown,) = acc.Images("overlay/0")  # painted with the grid's ignore_index: 1 is void
    overlay = _overlay(A, 3)
    want = overlay_image(overlay.image[0], overlay.truth[0], overlay.pred[0], 1)
    assert (want != overlay_image(overlay.image[0], overlay.truth[0], overlay.pred[0])).any()
    picture = np.asarray(Image.open(io.BytesIO(shown.encoded_image_string)))
    np.testing.assert_array_equal(picture, want)
    (run,) = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("quick").experiment_id])  # fmt: skip
    assert (run.info.run_name, run.info.status) == (A.trial_id, "FINISHED")
    assert run.data.metrics["val/iou"] == _metrics(A, 3)["val_iou"]


def _lr_trial(lr: float, encoder: str, training_run: str) -> TrialInfo:
    """A trial of a grid varying train.lr and model.encoder besides the four."""
    factors = {"image_size": 32, "dataset_size": 8, "epochs": 3, "batch_size": 4,
               "model.encoder": encoder, "train.lr": lr}  # fmt: skip
    cell_id = f"img32_n8_ep3_bs4_model.encoder={encoder}_train.lr={lr:g}"
    return TrialInfo(f"{cell_id}_s0", cell_id, 0, factors, training_run, HPARAMS)


def test_settings_varied_as_factors_are_hparams_and_mlflow_params(tmp_path, monkeypatch):
    import mlflow

    low, high = _lr_trial(3e-4, "resnet18", A.trial_id), _lr_trial(1e-3, "resnet34", B.trial_id)
    monkeypatch.setitem(STATUS, low, Status.OK)
    monkeypatch.setitem(STATUS, high, Status.OK)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _feed(Trackers([TensorBoardTracker(tmp_path / "tb"), MlflowTracker(uri, "five")]),
          runs=((low,), (high,)))  # fmt: skip

    experiment, _ = _hparams_backend(tmp_path / "tb")
    infos = {h.name: h for h in experiment.hparam_infos}
    # the extra factors are marked as differing like the four, so they are shown first
    assert [h.name for h in experiment.hparam_infos][:7] == sorted(
        [*FACTORS, "seed", "model.encoder", "train.lr"])  # fmt: skip
    assert infos["train.lr"].type == api_pb2.DATA_TYPE_FLOAT64
    # a text factor's domain stays open: its other levels are not known when it is written
    assert infos["model.encoder"].type == api_pb2.DATA_TYPE_STRING
    assert not infos["model.encoder"].HasField("domain_discrete")
    for trial in (low, high):
        hparams, _ = _session(_events(tmp_path / "tb" / trial.trial_id))
        assert (hparams["train.lr"], hparams["model.encoder"]) == (
            trial.factors["train.lr"], trial.factors["model.encoder"])  # fmt: skip

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runs = mlflow.search_runs(experiment_names=["five"]).set_index("tags.mlflow.runName")
    assert runs.loc[low.trial_id, "params.train.lr"] == "0.0003"
    assert runs.loc[high.trial_id, "params.model.encoder"] == "resnet34"
