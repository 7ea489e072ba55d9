"""End to end on a real local Ray cluster: grid file → Tune trials → TorchTrainer → Parquet.
Each trial costs ~15-20 s of process start-up on 2 cores, so these grids are tiny; the
pieces are tested directly in the other files."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from fixtures_ray import app, runner
from fixtures_ray import grid_file as _write
from fixtures_ray import run_cli as _run

from gridrun.layout import CURVE_COLUMNS, TRIAL_COLUMNS
from gridrun.spec import load_grid

pytestmark = pytest.mark.ray


def test_grid_runs_end_to_end_and_resumes(ray_cluster, tmp_path):
    factors = {"image_size": 32, "dataset_size": 8, "epochs": 2, "batch_size": [3, 8]}
    grid_file = _write(tmp_path, "e2e", factors, val_size=3)
    out = tmp_path / "run"
    result = _run(grid_file, out)
    assert result.exit_code == 0, result.output

    trials = pd.read_parquet(out / "trials.parquet")
    curves = pd.read_parquet(out / "curves.parquet")
    assert list(trials.columns[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert list(curves.columns[: len(CURVE_COLUMNS)]) == CURVE_COLUMNS
    assert sorted(trials["status"]) == ["ok", "ok"]
    # the last partial batch is kept: steps = epochs × ceil(dataset_size / batch_size)
    by_batch = trials.set_index("batch_size")["steps"].to_dict()
    assert by_batch == {3: 2 * math.ceil(8 / 3), 8: 2}
    assert len(curves) == 4
    assert sorted(curves.groupby("run_id")["epoch"].apply(list).tolist()) == [[1, 2], [1, 2]]
    # every validation pixel scored once, at the common evaluation resolution
    assert (curves["val_pixels"] == 3 * 32 * 32).all()
    assert curves[["val_iou", "val_loss", "train_loss"]].notna().all().all()
    assert (trials["params"] > 0).all() and (trials["peak_mem_mb"] > 0).all()
    # each row points to its own checkpoint; nothing of the finished runs' restarts is kept
    for run_id, checkpoint in zip(trials["run_id"], trials["checkpoint"], strict=True):
        assert checkpoint == f"checkpoints/{run_id}.pt" and (out / checkpoint).is_file()
    assert not list((out / "checkpoints" / "latest").glob("*"))
    assert load_grid(out / "grid.yaml").factors.batch_size == [3, 8]

    status = runner.invoke(app, ["status", str(out)])
    assert "2 ok, 0 running, 0 not ok, 0 missing of 2" in status.output

    again = _run(grid_file, out)
    assert again.exit_code == 0, again.output
    assert "2 already done" in again.output
    assert (
        pd.read_parquet(out / "trials.parquet")["finished_at"].tolist()
        == trials["finished_at"].tolist()
    )

    # growing the study: one more seed runs exactly the two new trials
    grown = _write(tmp_path, "e2e", factors, val_size=3, seeds=[0, 1])
    result = _run(grown, out)
    assert result.exit_code == 0, result.output
    assert "2 ok; 2 already done" in " ".join(result.output.split())
    after = pd.read_parquet(out / "trials.parquet").set_index("run_id")
    assert sorted(after.index) == sorted([*trials["run_id"], "img32_n8_ep2_bs3_s1",
                                          "img32_n8_ep2_bs8_s1"])  # fmt: skip
    kept = after.loc[trials["run_id"], "finished_at"].tolist()
    assert kept == trials["finished_at"].tolist()
    assert load_grid(out / "grid.yaml").seeds == [0, 1]


def test_two_workers_train_data_parallel_across_two_nodes(ray_cluster, tmp_path):
    factors = {"image_size": 32, "dataset_size": 6, "epochs": 1, "batch_size": 4}
    resources = {"workers_per_unit": 2}
    data = {"source": "synthetic", "val_size": 3, "test_size": 2}
    grid_file = _write(tmp_path, "ddp", factors, val_size=3, resources=resources, data=data)
    out = tmp_path / "run"
    result = _run(grid_file, out)
    assert result.exit_code == 0, result.output
    curves = pd.read_parquet(out / "curves.parquet")
    assert curves["world_size"].tolist() == [2]
    # counts were summed across both workers: each pixel once, none twice
    assert curves["val_pixels"].tolist() == [3 * 32 * 32]
    assert curves["test_pixels"].tolist() == [2 * 32 * 32]
    assert curves["train_pixels"].tolist() == [6 * 32 * 32]
    assert curves["step"].tolist() == [2]
    assert pd.read_parquet(out / "trials.parquet")["device"].tolist() == ["cpu"]
    # the trivial predictors' scores, from pixel counts the driver got from a Ray task
    baselines = json.loads((out / "baselines.json").read_text())
    val, test = baselines["splits"]["val"], baselines["splits"]["test"]
    assert (val["images"], sum(val["class_pixels"]), test["images"]) == (3, 3 * 32 * 32, 2)
    foreground = baselines["predictors"]["all foreground"]
    assert foreground["val_iou"] == pytest.approx(val["class_pixels"][1] / (3 * 32 * 32))
    assert set(baselines["predictors"]) == {"all background", "all foreground"}


def test_failed_trial_becomes_a_row_and_the_grid_goes_on(ray_cluster, tmp_path):
    # lraspp pools 16 px down to 1×1; BatchNorm cannot train on the final batch of one
    # image there, so the cell with batch 2 on 3 images fails at its second step. One slot:
    # both runs are packed into one work unit, and the failure does not end it
    factors = {"image_size": 16, "dataset_size": 3, "epochs": 1, "batch_size": [2, 3]}
    model = {"name": "lraspp_mobilenet_v3_large"}
    grid_file = _write(
        tmp_path, "fails", factors, val_size=2, model=model,
        resources={"max_concurrent_units": 1},
    )  # fmt: skip
    out = tmp_path / "run"
    result = _run(grid_file, out)
    assert result.exit_code == 1, result.output
    assert "2 training runs in 1 work unit" in " ".join(result.output.split())
    trials = pd.read_parquet(out / "trials.parquet").set_index("batch_size")
    assert trials.loc[3, "status"] == "ok"
    assert trials.loc[2, "status"] == "failed"
    assert "Expected more than 1 value per channel" in trials.loc[2, "error"]
    status = runner.invoke(app, ["status", str(out)])
    assert "1 ok, 0 running, 1 not ok, 0 missing of 2" in status.output

    # a rerun retries only the failed trial (afresh, in a new Tune experiment)
    again = _run(grid_file, out)
    assert "1 already done" in again.output
    retried = pd.read_parquet(out / "trials.parquet").set_index("batch_size")
    assert retried.loc[3, "finished_at"] == trials.loc[3, "finished_at"]
    assert retried.loc[2, "finished_at"] > trials.loc[2, "finished_at"]
    assert len(list((out / "ray").glob("tune-*"))) == 2


def test_cells_differing_in_epochs_share_one_training_run(ray_cluster, tmp_path, monkeypatch):
    factors = {"image_size": 16, "dataset_size": 4, "epochs": [1, 2, 4], "batch_size": 4}
    # each worker needs a fake_gpu; the cluster has two, so exactly two work units overlap
    # note: 3 s more per epoch (12 s a run), so that the overlap checked below does not
    # hang on worker start-up: a run of 4 tiny epochs took 4 s, while one unit's workers
    # started 4.2 s after the other's on a loaded machine
    slow = ",".join(f"slow@img16_n4_ep4_bs4_s{seed}:3" for seed in (0, 1))
    monkeypatch.setenv("GRIDRUN_FAULTS", slow)
    grid_file = _write(tmp_path, "share", factors, val_size=2, seeds=[0, 1],
                       resources={"custom": {"fake_gpu": 1}})  # fmt: skip
    out = tmp_path / "run"
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _run(grid_file, out, "--mlflow", mlflow_uri)
    assert result.exit_code == 0, result.output
    assert "8 epochs trained for 14 requested" in " ".join(result.output.split())
    assert "2 at a time" in result.output
    trials = pd.read_parquet(out / "trials.parquet")
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(trials) == 6 and (trials["status"] == "ok").all()
    # one row per (cell, seed, epoch) as before, but only 8 epochs were trained
    assert len(curves) == 2 * (1 + 2 + 4)
    assert len(curves[["training_run", "epoch"]].drop_duplicates()) == 8
    assert set(trials["training_run"]) == {"img16_n4_ep4_bs4_s0", "img16_n4_ep4_bs4_s1"}
    # the two runs' work units ran side by side
    ends = trials.groupby("training_run")["finished_at"].max()
    assert (trials.groupby("training_run")["started_at"].min() < ends.min()).all()
    shared = curves[curves["run_id"] == curves["training_run"]].set_index(
        ["training_run", "epoch"]
    )
    for row in trials.itertuples():
        at_its_epoch = shared.loc[(row.training_run, row.epochs)]
        assert row.final_val_iou == at_its_epoch["val_iou"]
        assert row.steps == at_its_epoch["step"] == row.epochs
        assert (out / row.checkpoint).is_file()
    checkpoints = {int(torch_load(out / c)["epoch"]) for c in trials["checkpoint"]}
    assert checkpoints == {1, 2, 4}

    # TensorBoard, on by default: each training run's val_iou curve and overlays once, in
    # the folder of its longest trial (named like the run); every (cell, seed) has its own
    # final numbers at its own epoch and the four factors in the HParams data
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for row in trials.itertuples():
        events = EventAccumulator(str(out / "tensorboard" / row.run_id), size_guidance={
            "images": 0, "scalars": 0, "tensors": 0})  # fmt: skip
        events.Reload()
        if row.run_id == row.training_run:
            ious = events.Scalars("val/iou")
            expected = curves[curves["run_id"] == row.run_id]
            assert [e.step for e in ious] == expected["epoch"].tolist() == [1, 2, 3, 4]
            assert [e.value for e in ious] == pytest.approx(expected["val_iou"].tolist())
            # overlays at every epoch the run predicted: each cell's own and the last
            assert [i.step for i in events.Images("overlay/0")] == [1, 2, 4]
        else:
            assert "val/iou" not in events.Tags()["scalars"] and not events.Tags()["images"]
        (final,) = events.Scalars("trial/final_val_iou")
        assert final.step == row.epochs and final.value == pytest.approx(row.final_val_iou)
        hparams = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(
            hparams["_hparams_/session_start_info"]
        ).session_start_info
        assert {"image_size", "dataset_size", "epochs", "batch_size"} <= set(start.hparams)

    # MLflow, asked for: one run per (cell, seed) with its factors and metric history
    import mlflow

    # note: a client of its own, so no global MLflow state leaks into other tests
    client = mlflow.MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("share").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(trials["run_id"])
    assert {r.data.params["epochs"] for r in runs} == {"1", "2", "4"}
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val/iou")
        assert [m.step for m in history] == list(range(1, int(run.data.params["epochs"]) + 1))


def torch_load(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def test_a_learning_rate_factor_runs_end_to_end_tied_to_the_batch(ray_cluster, tmp_path):
    factors = {"image_size": 8, "dataset_size": 4, "epochs": [1, 2], "batch_size": [2, 4],
               "train.lr": [1.0e-4, 3.0e-2]}  # fmt: skip
    train = {"lr_scaling": "linear"}
    grid_file = _write(tmp_path, "lr", factors, val_size=2, train=train, nuisance=["train.lr"])
    out = tmp_path / "run"
    result = _run(grid_file, out)
    assert result.exit_code == 0, result.output
    assert "8 trials" in result.output and "4 training runs" in " ".join(result.output.split())

    trials = pd.read_parquet(out / "trials.parquet").set_index("run_id")
    curves = pd.read_parquet(out / "curves.parquet")
    assert sorted(trials["status"]) == ["ok"] * 8
    assert sorted(trials["train.lr"].unique()) == [1e-4, 3e-2]
    assert sorted(curves["train.lr"].unique()) == [1e-4, 3e-2]
    # the lr trained at: the level × batch / smallest batch (the tie), per cell
    assert (trials["lr"] == trials["train.lr"] * trials["batch_size"] / 2).all()
    # runs differing only in lr share nothing and train differently
    low = curves[(curves["train.lr"] == 1e-4) & (curves["batch_size"] == 2)]
    high = curves[(curves["train.lr"] == 3e-2) & (curves["batch_size"] == 2)]
    assert set(low["training_run"]).isdisjoint(high["training_run"])
    low, high = (c.sort_values(["epochs", "epoch"])["train_loss"].to_numpy() for c in (low, high))
    assert len(low) == len(high) == 3 and (abs(low - high) > 1e-6).all()
    assert load_grid(out / "grid.yaml").nuisance == ["train.lr"]
