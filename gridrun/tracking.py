"""Experiment tracking, fed by the driver: TensorBoard (on by default) and MLflow (optional).

The driver calls, per trial, `epoch()` once for each epoch's metrics (with an `Overlay`
at the epochs that have predictions of the fixed validation images), then `end()`; at
the end of the study `close()`. Trackers only record; `Trackers` fans out to several and
turns a tracker's error into one warning, so logging never stops a study.

Names, the same in TensorBoard and MLflow (`metric_tag`):

    per epoch, step = epoch   train_loss -> train/loss, val_iou -> val/iou,
                              val_iou_c1 -> val/iou_c1, test_iou -> test/iou;
                              lr, epoch_time_s, ... unchanged
    at the end, step = last   trial/<key> for each number in `final` (trial/best_val_iou)

Only metrics are logged (`_is_metric`): losses, scores, lr, times, throughput, memory.
Bookkeeping numbers (the optimizer step, parameter count, world size, worker pid, pixel
counts, ids, and any other integer but `best_epoch`) and the trial's own settings are not.

Shared training runs (see `gridrun.runs`): trials that differ only in `epochs` read one
run's curve, and the run is named like its longest trial. TensorBoard gets that curve
once: the per-epoch scalars and overlays go to the longest trial's folder only (named
like the training run, so the Scalars dashboard shows one curve per run); a shorter
trial's folder holds its HParams session and its `trial/<key>` numbers at its own epoch.
MLflow keeps one run per trial, each with its own epochs.

Settings (`TrialInfo.params`) are the factors (the four, then any setting varied as a
factor, by its dotted path), the seed and the fixed hparams.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from gridrun.layout import BEST_METRIC, Status, best_name, final_column
from gridrun.painting import as_rgb, paint_overlay
from gridrun.records import EpochReport, TrialRow
from gridrun.runs import TrialInfo

__all__ = [
    "MlflowTracker",
    "Overlay",
    "TensorBoardTracker",
    "Tracker",
    "Trackers",
    "TrialInfo",
    "make_trackers",
    "metric_tag",
    "overlay_image",
]

@dataclass(frozen=True)
class Overlay:
    """Predictions of the fixed validation images at one epoch."""

    epoch: int
    image: np.ndarray  # uint8 N×H×W×3
    truth: np.ndarray  # uint8 N×H×W labels; data.ignore_index marks unlabelled pixels
    pred: np.ndarray  # uint8 N×H×W predicted labels


class Tracker(Protocol):
    def epoch(self, trial: TrialInfo, report: EpochReport, overlay: Overlay | None) -> None:
        """One epoch's metrics; `report.epoch` is the step."""

    def end(self, trial: TrialInfo, status: Status, final: TrialRow) -> None:
        """The trial is over with `status`; `final` is its row."""

    def close(self) -> None: ...


def overlay_image(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignore_index: int | None = None
) -> np.ndarray:
    """uint8 H×2W×3: left the image, right its TP, FP and FN pixels painted as in the
    report (`gridrun.painting.paint_overlay`)."""
    painted = paint_overlay(image, truth, pred, ignore_index)
    return np.concatenate([as_rgb(image), painted], axis=1)


_INVALID_NAME = re.compile(r"[^\w\-. /]")  # note: MLflow's rule for names (on Windows)


def metric_tag(key: str) -> str:
    """The tag of a metrics column: `train_`/`val_`/`test_` become sections (`val_iou` ->
    `val/iou`), so TensorBoard and MLflow group them; characters MLflow refuses become `_`."""
    for split in ("train", "val", "test"):
        if key.startswith(f"{split}_") and len(key) > len(split) + 1:
            key = f"{split}/{key[len(split) + 1 :]}"
            break
    return _INVALID_NAME.sub("_", key)


# note: numbers a worker reports beside its metrics; named in case one arrives as a float
_BOOKKEEPING = {"epoch", "step", "steps", "params", "world_size", "worker_pid", "pid"}
_BOOKKEEPING_SUFFIXES = ("_pixels", "_pid", "_id", "_ip")
_COUNTS_KEPT = {"best_epoch"}  # an integer that is a result, not bookkeeping
# the report's metrics first in the HParams table, whose first columns are shown
_HEADLINE = tuple(
    name
    for metric in (BEST_METRIC, "val_miou")
    for name in (final_column(metric), best_name(metric))
)


def _is_metric(key: str, value: Any) -> bool:
    """Whether `value` is a metric to log: a real number that is no count or id."""
    if not isinstance(value, Real) or isinstance(value, bool):
        return False
    if key in _BOOKKEEPING or key.endswith(_BOOKKEEPING_SUFFIXES):
        return False
    return key in _COUNTS_KEPT or not isinstance(value, Integral)


def _metrics_of(values: Mapping[str, object], skip: Collection[str]) -> dict[str, float]:
    """The metrics among `values`, the headline ones first."""
    keys = [k for k in _HEADLINE if k in values] + [k for k in values if k not in _HEADLINE]
    return {k: float(values[k]) for k in keys if k not in skip and _is_metric(k, values[k])}


def _epoch_scalars(trial: TrialInfo, metrics: Mapping[str, float | int]) -> dict[str, float]:
    skip = {*trial.factors, "seed"}  # note: `lr` is an hparam and a per-epoch metric
    return {metric_tag(k): v for k, v in _metrics_of(metrics, skip).items()}


def _final_scalars(trial: TrialInfo, final: Mapping[str, object]) -> dict[str, float]:
    """`trial/<key>` of the row's metrics, the headline first; settings are not repeated."""
    return {f"trial/{metric_tag(k)}": v for k, v in _metrics_of(final, trial.params).items()}


@dataclass
class _Open:
    handle: Any  # a SummaryWriter or an MLflow run id
    step: int


class TensorBoardTracker:
    """Event files in `logdir/<trial_id>/`, one folder per trial, so `tensorboard --logdir
    logdir` lists trials as runs and the HParams dashboard shows one row per trial.

    The folder of a training run's longest trial (named like the run) holds the run's
    epoch scalars and overlays (`overlay/<i>`, step = epoch); every trial's folder holds
    its `trial/<key>` numbers and its HParams session: the start (the trial's params)
    written when the trial is first seen, the end (SUCCESS for ok, FAILURE otherwise)
    with `end()`. At the first `end()` with metrics, `logdir` itself gets the HParams
    Experiment: every param, and as metrics the `trial/<key>` tags in `_final_scalars`
    order, headline first (built without one, TensorBoard sorts them by name, and its
    HParams table shows the first five). The factors' domains are left open: the levels
    still to come are not known yet.

    A trial first seen at epoch 1 (or only at its end) starts afresh: event files a
    failed earlier attempt left in its folder are deleted. One first seen later resumed,
    and TensorBoard hides the earlier attempt's steps from there on (`purge_step`).
    `upload(path)` is called with a trial's folder once its files are complete (and at
    `close()` for trials still open), and with the Experiment's event file once written,
    e.g. to copy them to object storage. Overlays leave pixels whose truth is
    `ignore_index` (the grid's data.ignore_index) unpainted.
    """

    def __init__(
        self,
        logdir: Path,
        upload: Callable[[Path], None] | None = None,
        ignore_index: int | None = None,
    ):
        from torch.utils.tensorboard import SummaryWriter  # note: keeps torch out of imports

        self._writer_type = SummaryWriter
        self.logdir = Path(logdir)
        self._upload, self._ignore_index = upload, ignore_index
        self._open: dict[str, _Open] = {}
        self._experiment: Path | None = None

    def epoch(self, trial: TrialInfo, report: EpochReport, overlay: Overlay | None) -> None:
        step = report.epoch
        run = self._run(trial, step)
        run.step = step
        if trial.trial_id != trial.training_run:
            return  # note: a shorter trial of a shared run; its longest trial logs the curve
        writer = run.handle
        for tag, value in _epoch_scalars(trial, report.metrics).items():
            writer.add_scalar(tag, value, step)
        if overlay is not None:
            for i, (image, truth, pred) in enumerate(
                zip(overlay.image, overlay.truth, overlay.pred, strict=True)
            ):
                picture = overlay_image(image, truth, pred, self._ignore_index)
                writer.add_image(f"overlay/{i}", picture, overlay.epoch, dataformats="HWC")
        writer.flush()  # note: live dashboards; one small write per epoch

    def end(self, trial: TrialInfo, status: Status, final: TrialRow) -> None:
        run = self._run(trial, None)
        scalars = _final_scalars(trial, final.columns)
        for tag, value in scalars.items():
            run.handle.add_scalar(tag, value, run.step)
        run.handle.file_writer.add_summary(_session_end(status), run.step)
        self._finish(trial.trial_id)
        if self._experiment is None and scalars:
            self._write_experiment(trial, list(scalars))

    def close(self) -> None:
        for trial_id in list(self._open):
            self._finish(trial_id)

    def _run(self, trial: TrialInfo, step: int | None) -> _Open:
        if trial.trial_id in self._open:
            return self._open[trial.trial_id]
        folder = self.logdir / trial.trial_id
        resumed = step is not None and step > 1
        if not resumed:
            _delete_events(folder)
        writer = self._writer_type(str(folder), purge_step=step if resumed else None)
        run = self._open[trial.trial_id] = _Open(writer, step or 0)
        writer.file_writer.add_summary(_session_start(trial), run.step)
        return run

    def _finish(self, trial_id: str) -> None:
        self._open.pop(trial_id).handle.close()
        if self._upload is not None:
            self._upload(self.logdir / trial_id)

    def _write_experiment(self, trial: TrialInfo, metrics: list[str]) -> None:
        # note: TensorBoard keeps the first Experiment it reads, so a rerun's replaces
        # the earlier one here; uploaded, both stay and the earlier (same columns) is read
        _delete_events(self.logdir)
        writer = self._writer_type(str(self.logdir))
        writer.file_writer.add_summary(_experiment(trial, metrics))
        writer.close()
        (self._experiment,) = self.logdir.glob("events.out.tfevents.*")
        if self._upload is not None:
            self._upload(self._experiment)


def _delete_events(folder: Path) -> None:
    for stale in folder.glob("events.out.tfevents.*"):
        stale.unlink()


def _experiment(trial: TrialInfo, metrics: list[str]) -> Summary:
    """The HParams plugin's Experiment: `trial`'s params, `metrics` in order.

    The factors and the seed are marked as differing, which puts them first among the
    columns shown; a fixed setting's domain is its one value; a number's, and a text
    factor's (model.encoder: its other levels are not known here), are left open."""
    varied = {*trial.factors, "seed"}
    hparams = []
    for name, value in trial.params.items():
        info = api_pb2.HParamInfo(name=name, type=_data_type(value), differs=name in varied)
        if isinstance(value, str | bool) and name not in varied:
            info.domain_discrete.extend([value])
        hparams.append(info)
    names = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metrics]
    experiment = api_pb2.Experiment(
        hparam_infos=hparams, metric_infos=names, time_created_secs=time.time()
    )
    data = plugin_data_pb2.HParamsPluginData(experiment=experiment)
    return _hparams_summary(metadata.EXPERIMENT_TAG, data)


def _data_type(value: Any) -> int:
    if isinstance(value, str):
        return api_pb2.DATA_TYPE_STRING
    return api_pb2.DATA_TYPE_BOOL if isinstance(value, bool) else api_pb2.DATA_TYPE_FLOAT64


def _session_start(trial: TrialInfo) -> Summary:
    """The HParams plugin's record that a trial began, with its params."""
    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in trial.params.items():
        if isinstance(value, str):
            info.hparams[name].string_value = value
        elif isinstance(value, bool):
            info.hparams[name].bool_value = value
        else:
            info.hparams[name].number_value = float(value)
    data = plugin_data_pb2.HParamsPluginData(session_start_info=info)
    return _hparams_summary(metadata.SESSION_START_INFO_TAG, data)


def _session_end(status: Status) -> Summary:
    outcome = api_pb2.STATUS_SUCCESS if status == Status.OK else api_pb2.STATUS_FAILURE
    info = plugin_data_pb2.SessionEndInfo(status=outcome, end_time_secs=time.time())
    data = plugin_data_pb2.HParamsPluginData(session_end_info=info)
    return _hparams_summary(metadata.SESSION_END_INFO_TAG, data)


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    # note: what torch's `summary.hparams` builds, minus its fixed STATUS_SUCCESS and
    # missing times; tensorboard's own `hparams.summary` helpers need TensorFlow
    value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))
    return Summary(value=[value])


def _is_file_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme == "file" or (scheme == "" and not uri.startswith("databricks"))


class MlflowTracker:
    """One MLflow run per trial (named its trial_id) in `experiment`, through `MlflowClient`
    so that any number of trials are open at once. Params: `TrialInfo.params`; tags:
    cell_id, training_run, and at the end status plus `final`'s text entries; metrics as
    in `metric_tag`. The run ends FINISHED for ok, FAILED otherwise, KILLED if the study
    closes first. Every attempt at a trial is its own run.

    `tracking_uri`: a server (`http://host:5000`), `sqlite:///path/mlflow.db` (no server
    needed) or a folder; a folder (plain path or `file:`) sets MLFLOW_ALLOW_FILE_STORE=true,
    without which MLflow 3 refuses it.
    """

    def __init__(self, tracking_uri: str, experiment: str):
        if _is_file_store(tracking_uri):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        from mlflow import MlflowClient  # note: optional, and seconds to import

        self._client = MlflowClient(tracking_uri=tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        self._experiment_id = (
            found.experiment_id if found else self._client.create_experiment(experiment)
        )
        self._open: dict[str, _Open] = {}

    def epoch(self, trial: TrialInfo, report: EpochReport, overlay: Overlay | None) -> None:
        run = self._run(trial)
        run.step = report.epoch
        self._log(run, _epoch_scalars(trial, report.metrics))

    def end(self, trial: TrialInfo, status: Status, final: TrialRow) -> None:
        from mlflow.entities import RunTag

        run = self._run(trial)
        self._log(run, _final_scalars(trial, final.columns))
        row = final.columns
        text = {_INVALID_NAME.sub("_", k): v for k, v in row.items() if isinstance(v, str) and v}
        tags = {**text, "status": status.value}
        # note: MLflow refuses a tag value over 8000 characters; a long error is cut
        self._client.log_batch(run.handle, tags=[RunTag(k, v[:8000]) for k, v in tags.items()])
        self._client.set_terminated(run.handle, "FINISHED" if status == Status.OK else "FAILED")
        del self._open[trial.trial_id]

    def close(self) -> None:
        for trial_id in list(self._open):
            self._client.set_terminated(self._open.pop(trial_id).handle, "KILLED")

    def _run(self, trial: TrialInfo) -> _Open:
        if trial.trial_id not in self._open:
            from mlflow.entities import Param

            tags = {"cell_id": trial.cell_id, "training_run": trial.training_run}
            created = self._client.create_run(
                self._experiment_id, run_name=trial.trial_id, tags=tags
            )
            params = [Param(_INVALID_NAME.sub("_", k), str(v)) for k, v in trial.params.items()]
            self._client.log_batch(created.info.run_id, params=params)
            self._open[trial.trial_id] = _Open(created.info.run_id, 0)
        return self._open[trial.trial_id]

    def _log(self, run: _Open, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, run.step) for key, value in values.items()]
        self._client.log_batch(run.handle, metrics=metrics)


class Trackers:
    """Fans each call out to several trackers. A tracker's error is swallowed: the first
    is shown as a warning, the rest are counted and the count shown at `close()`."""

    def __init__(self, trackers: Sequence[Tracker] = ()):
        self.trackers = list(trackers)
        self._errors = [0] * len(self.trackers)

    def epoch(self, trial: TrialInfo, report: EpochReport, overlay: Overlay | None) -> None:
        self._each("epoch", trial, report, overlay)

    def end(self, trial: TrialInfo, status: Status, final: TrialRow) -> None:
        self._each("end", trial, status, final)

    def close(self) -> None:
        self._each("close")
        for tracker, errors in zip(self.trackers, self._errors, strict=True):
            if errors > 1:
                warnings.warn(f"{type(tracker).__name__}: {errors} errors in all", stacklevel=2)

    def _each(self, method: str, *args: Any) -> None:
        for i, tracker in enumerate(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:
                self._errors[i] += 1
                if self._errors[i] == 1:
                    warnings.warn(
                        f"{type(tracker).__name__}.{method} failed, the study goes on "
                        f"(later errors of this tracker are only counted): {exc!r}",
                        stacklevel=3,
                    )


def make_trackers(
    tensorboard_dir: Path | None,
    mlflow_uri: str | None,
    experiment: str,
    upload: Callable[[Path], None] | None = None,
    ignore_index: int | None = None,
) -> Trackers:
    """TensorBoard where a folder is given, MLflow where a URI is. A tracker that cannot
    start (e.g. an unreachable MLflow server) raises here, before any trial runs."""
    trackers: list[Tracker] = []
    if tensorboard_dir is not None:
        trackers.append(TensorBoardTracker(tensorboard_dir, upload, ignore_index))
    if mlflow_uri is not None:
        trackers.append(MlflowTracker(mlflow_uri, experiment))
    return Trackers(trackers)
