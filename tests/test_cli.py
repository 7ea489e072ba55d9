"""The CLI a user types: `plan` and `status` (`run` starts Ray and is tested end to end)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from gridrun.cli import app
from gridrun.layout import Progress, Status
from gridrun.records import EpochReport, WorkerInfo
from gridrun.runs import training_runs, trial_info
from gridrun.spec import load_grid
from gridrun.storage import Storage
from gridrun.store import Results, claim_study

# note: Click >= 8.2 interleaves stderr into result.output (older Click mixed it by default)
runner = CliRunner()


def _words(text: str) -> str:
    """Rich wraps long lines at the terminal width; compare text with single spaces."""
    return " ".join(text.split())


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _plan(path: Path, text: str) -> str:
    """`gridrun plan` of a grid file holding `text`, which must succeed: its words."""
    result = runner.invoke(app, ["plan", str(_write(path, text))])
    assert result.exit_code == 0, result.output
    return _words(result.output)


def _epoch(trial, epoch: int, **metrics: float) -> EpochReport:
    worker = WorkerInfo("10.0.0.7", "a1b2c3", 4321)
    return EpochReport(trial.training_run, epoch, Status.OK, metrics, 1234, 1, "cpu", None, worker)


def _assert_one_clean_error_line(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0]


def test_plan_prints_the_totals(tmp_path: Path) -> None:
    grid = _write(
        tmp_path / "grid.yaml",
        "name: demo\nfactors:\n  image_size: [32, 64]\n  dataset_size: [8, 16]\n"
        "  epochs: [2]\n  batch_size: [4]\nseeds: [0, 1]\n",
    )
    result = runner.invoke(app, ["plan", str(grid)])
    assert result.exit_code == 0, result.output
    # steps per seed: 2 image sizes × (2·ceil(8/4) + 2·ceil(16/4)) = 2 × 12 = 24; two seeds
    # synthetic: ceil(16 / 0.8) = 20 scenes, 20% of them (4) for validation
    assert (
        "4 cells × 2 seeds = 8 trials, served by 8 training runs: 16 epochs trained for 16 "
        "requested (1.00×), 48 optimizer steps in all"
    ) in _words(result.output)
    assert "20 images, 4 for validation, scored at 64px" in _words(result.output)
    for cell in load_grid(grid).cells():
        assert cell.cell_id in result.output


def test_plan_on_a_membrane_folder_grid(membrane: Path, tmp_path: Path) -> None:
    words = _plan(
        tmp_path / "grid.yaml",
        f"data: {{source: folder, path: '{membrane}', val_size: 6}}\n"
        "factors: {image_size: [64], dataset_size: [10, 24], epochs: [3], batch_size: [4]}\n",
    )
    # 3·ceil(10/4) + 3·ceil(24/4) = 9 + 18
    assert "2 cells × 1 seed = 2 trials, served by 2 training runs" in words
    assert "27 optimizer steps in all" in words
    assert "data: folder, 30 images, 6 for validation, scored at 64px" in words


def test_plan_names_the_test_split(membrane: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    words = _plan(
        grid,
        f"data: {{source: folder, path: '{membrane}', val_size: 6, test_fraction: 0.2}}\n"
        "factors: {image_size: [64], dataset_size: [18], epochs: [3], batch_size: [4]}\n",
    )
    assert "30 images, 6 for validation, 6 for testing, scored at 64px" in words
    too_many = _write(tmp_path / "big.yaml", grid.read_text().replace("[18]", "[19]"))
    _assert_one_clean_error_line(
        runner.invoke(app, ["plan", str(too_many)]), "factors.dataset_size", "data.test_fraction"
    )


def test_plan_with_an_unknown_key_is_one_line(tmp_path: Path) -> None:
    grid = _write(
        tmp_path / "grid.yaml",
        "factors:\n  image_sise: [32]\n  dataset_size: [8]\n  epochs: [1]\n  batch_size: [4]\n",
    )
    result = runner.invoke(app, ["plan", str(grid)])
    _assert_one_clean_error_line(result, "factors.image_sise", "did you mean 'image_size'")


def test_plan_with_an_empty_level_is_one_line(tmp_path: Path) -> None:
    grid = _write(
        tmp_path / "grid.yaml",
        "factors: {image_size: [32], dataset_size: [8], epochs: [], batch_size: [4]}\n",
    )
    _assert_one_clean_error_line(runner.invoke(app, ["plan", str(grid)]), "factors.epochs")


def test_plan_refuses_a_boolean_level_and_a_key_given_twice(tmp_path: Path) -> None:
    boolean = _write(
        tmp_path / "boolean.yaml",
        "factors: {image_size: [32, true], dataset_size: [8], epochs: [1], batch_size: [4]}\n",
    )
    result = runner.invoke(app, ["plan", str(boolean)])
    _assert_one_clean_error_line(result, "factors.image_size[1]: expected an integer")
    twice = _write(tmp_path / "twice.yaml", boolean.read_text().replace("32, true", "32") * 2)
    result = runner.invoke(app, ["plan", str(twice)])
    _assert_one_clean_error_line(result, "line 2 invalid YAML (duplicate key factors")


def test_plan_on_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", str(tmp_path / "absent.yaml")])
    _assert_one_clean_error_line(result, "absent.yaml")


def test_plan_on_a_folder_with_a_mismatched_mask_names_the_file(image_folder, tmp_path) -> None:
    root = image_folder(6)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(root / "masks" / "03.png")
    grid = _write(
        tmp_path / "grid.yaml",
        "data: {source: folder, path: data, val_size: 2}\n"
        "factors: {image_size: [8], dataset_size: [4], epochs: [1], batch_size: [2]}\n",
    )
    result = runner.invoke(app, ["plan", str(grid)])
    _assert_one_clean_error_line(result, str(root / "masks" / "03.png"))


def test_plan_with_too_few_images_names_dataset_size(image_folder, tmp_path) -> None:
    image_folder(6)
    grid = _write(
        tmp_path / "grid.yaml",
        "data: {source: folder, path: data, val_size: 2}\n"
        "factors: {image_size: [8], dataset_size: [5], epochs: [1], batch_size: [2]}\n",
    )
    result = runner.invoke(app, ["plan", str(grid)])
    _assert_one_clean_error_line(result, "dataset_size")


def test_status_without_a_grid_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", str(tmp_path)])
    _assert_one_clean_error_line(result, "grid.yaml")


def test_status_counts_a_run_directory(tmp_path: Path) -> None:
    grid_file = _write(
        tmp_path / "grid.yaml",
        "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [2, 4]}\n"
        "seeds: [0, 1]\n",
    )
    grid = load_grid(grid_file)
    run_dir = tmp_path / "run"
    claim_study(Storage(run_dir), grid.resolved_yaml())
    results = Results(Storage(run_dir))
    trials = grid.trials()
    for trial, status, error, val_iou in [
        (trials[0], Status.OK, None, 0.5),
        (trials[1], Status.OK, None, math.nan),
        (trials[2], Status.FAILED, "worker died", 0.1),
    ]:
        (run,) = training_runs(grid, [trial])
        identity = trial_info(grid, run, trial)
        results.start(trial.trial_id)
        results.add_epoch(identity, _epoch(identity, 1, val_iou=val_iou))
        results.finish(identity, status, error)

    result = runner.invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    text = _words(result.output)
    assert f"{run_dir}: 2 ok, 0 running, 1 not ok, 1 missing of 4" in text
    assert f"failed {trials[2].trial_id} worker died" in text
    assert f"missing: {trials[3].trial_id}" in text
    assert "nan" not in text
    # the measured cost per step gives an estimate of what is left
    assert "worker-minutes of training left" not in text  # no training time was recorded


def test_version_and_help_examples() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"gridrun {version('gridrun')}"
    for command in ("run", "plan", "status", "report"):
        help_text = _words(runner.invoke(app, [command, "--help"]).output)
        assert f"gridrun {command} " in help_text, command


def test_plan_shows_epochs_trained_against_requested_and_why_not(tmp_path: Path) -> None:
    text = "factors: {image_size: [32], dataset_size: [8], epochs: [1, 2, 4], batch_size: [4]}\n"
    shared = _write(tmp_path / "shared.yaml", text + "seeds: [0, 1]\n")
    result = runner.invoke(app, ["plan", str(shared)])
    assert result.exit_code == 0, result.output
    assert "served by 2 training runs: 8 epochs trained for 14 requested" in _words(
        result.output
    )
    # each cell names the run that trains it: itself, or its cell's longest run
    rows = [line.split() for line in result.output.splitlines() if line.strip().startswith("img")]
    trained_by = {row[0]: " ".join(row[7:-1]) for row in rows}
    assert trained_by == {"img32_n8_ep1_bs4": "4-ep run", "img32_n8_ep2_bs4": "4-ep run",
                          "img32_n8_ep4_bs4": "itself"}  # fmt: skip
    cosine = _write(tmp_path / "cosine.yaml", text + "seeds: [0, 1]\ntrain: {schedule: cosine}\n")
    result = runner.invoke(app, ["plan", str(cosine)])
    words = _words(result.output)
    assert "served by 6 training runs: 14 epochs trained for 14 requested" in words
    assert "epochs not shared: train.schedule 'cosine' depends on the total epoch count" in words


def test_plan_shows_the_part_of_a_gpu_each_cell_asks_for(tmp_path: Path) -> None:
    text = "factors: {image_size: [256], dataset_size: [16], epochs: [1], batch_size: [4, 8, 16]}\n"
    result = runner.invoke(app, ["plan", str(_write(tmp_path / "g.yaml", text))])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[-1] for line in result.output.splitlines()
            if line.strip().startswith("img")}  # fmt: skip
    assert rows == {"img256_n16_ep1_bs4": "1/4", "img256_n16_ep1_bs8": "1/2",
                    "img256_n16_ep1_bs16": "1"}  # fmt: skip
    assert "GPU sharing: 1 training run at 1/4 GPU, 1 training run at 1/2 GPU" in _words(
        result.output
    )
    for off in ("resources: {share_gpus: false}\n", "resources: {use_gpu: false}\n"):
        result = runner.invoke(app, ["plan", str(_write(tmp_path / "g.yaml", text + off))])
        lines = result.output.splitlines()
        assert lines[0].split()[-1] == "by" and lines[1].split()[-1] == "itself"
        assert "GPU sharing" not in result.output


def test_plan_of_the_shipped_study_trains_80_epochs_per_group_not_200() -> None:
    study = Path(__file__).resolve().parents[1] / "grids" / "study.yaml"
    result = runner.invoke(app, ["plan", str(study)])
    assert result.exit_code == 0, result.output
    words = _words(result.output)
    groups = 3 * 3 * 4 * 3  # image sizes × data-set sizes × batch sizes × seeds
    assert f"served by {groups} training runs: {groups * 80} epochs trained for " \
        f"{groups * 200} requested (2.50×)" in words


def test_status_shows_running_trials_and_the_time_left(tmp_path: Path) -> None:
    from gridrun.store import StudyLock

    grid_file = _write(
        tmp_path / "grid.yaml",
        "factors: {image_size: [32], dataset_size: [8], epochs: [2, 4], batch_size: [4]}\n",
    )
    grid = load_grid(grid_file)
    study = Storage(tmp_path / "run")
    claim_study(study, grid.resolved_yaml())
    results = Results(study)
    short, long = grid.trials()  # ep2 done; ep4 running at epoch 3
    (run,) = training_runs(grid, [short, long])
    results.start(short.trial_id)
    for epoch in (1, 2):
        identity = trial_info(grid, run, short)
        metrics = {"val_iou": 0.5, "step": 2 * epoch, "train_time_s": 0.5 * epoch}
        results.add_epoch(identity, _epoch(identity, epoch, **metrics))
    results.finish(trial_info(grid, run, short), Status.OK)
    progress = Progress(time.time(), {long.trial_id: 3})
    (tmp_path / "run" / "progress.json").write_text(progress.to_json())
    with StudyLock(study):
        text = _words(runner.invoke(app, ["status", str(study)]).output)
    assert f"{study}: 1 ok, 1 running, 0 not ok, 0 missing of 2" in text
    assert f"running {long.trial_id} epoch 3" in text
    assert f"process {os.getpid()} on" in text
    # what is left: the 4-epoch run, 2 steps per epoch, at 0.25 s per measured step
    assert "(8 steps at the measured 0.25 s/step)" in text


MY_MODELS = """
from torch import nn


def build(in_channels, num_classes, classes_off=0):
    return nn.Conv2d(in_channels, num_classes + classes_off, 3, padding=1)
"""
TINY = "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}\n"


@pytest.fixture
def model_folder(tmp_path: Path, monkeypatch) -> Path:
    """A grid folder with a my_models.py beside it and a state dict of its builder."""
    import sys

    import torch

    (tmp_path / "my_models.py").write_text(MY_MODELS)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    torch.save(torch.nn.Conv2d(3, 1, 3, padding=1).state_dict(), tmp_path / "conv.pt")
    yield tmp_path
    sys.modules.pop("my_models", None)


@pytest.mark.parametrize(
    "model",
    [
        "{library: smp, arch: Unet, encoder: resnet18, encoder_weights: null}",
        "{target: 'my_models:build'}",
        "{target: 'my_models:build', weights: conv.pt}",
    ],
)
def test_plan_checks_an_smp_model_a_builder_and_local_weights(model_folder, model) -> None:
    grid = _write(model_folder / "grid.yaml", f"model: {model}\n{TINY}")
    result = runner.invoke(app, ["plan", str(grid)])
    assert result.exit_code == 0, result.output
    assert "1 cell × 1 seed = 1 trial" in _words(result.output)


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("{target: 'my_modelz:build'}", "model.target: no module 'my_modelz' in "),
        ("{target: 'my_models:build', weights: gone.pt}", "gone.pt: no such file"),
        ("{target: 'my_models:build', kwargs: {classes_off: 1}}",
         "gives logits of shape (2, 2, 32, 32) for images of shape (2, 3, 32, 32); gridrun "
         "needs (2, 1, 32, 32)"),
        ("{name: unet, weights: conv.pt}",
         "does not fit the model: 92 missing keys (down.0.0.weight, down.0.1.weight, "
         "down.0.1.bias, ...); 2 unexpected keys (weight, bias)"),
    ],
)  # fmt: skip
def test_plan_and_run_refuse_a_wrong_model_before_ray(model_folder, model, needle) -> None:
    grid = _write(model_folder / "grid.yaml", f"model: {model}\n{TINY}")
    _assert_one_clean_error_line(runner.invoke(app, ["plan", str(grid)]), needle)
    study = model_folder / "study"
    _assert_one_clean_error_line(
        runner.invoke(app, ["run", str(grid), "--out", str(study)]), needle
    )
    assert not study.exists()  # refused before the study (or Ray) was started


_FIVE = (
    "name: five\nfactors:\n  image_size: [16]\n  dataset_size: [8]\n  epochs: [1, 2]\n"
    "  batch_size: [2, 4]\n  train.lr: [3e-4, 1.0e-3]\ntrain: {lr_scaling: linear}\n"
    "nuisance: [train.lr]\n"
)


def test_plan_shows_a_setting_factor_beside_the_four(tmp_path: Path, monkeypatch) -> None:
    from gridrun import cli

    monkeypatch.setattr(cli.console, "width", 160)  # note: no cell id cut short
    result = runner.invoke(app, ["plan", str(_write(tmp_path / "grid.yaml", _FIVE))])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "image" in line).split()
    assert header[:7] == ["cell_id", "image", "data", "epochs", "batch", "train.lr", "steps"]
    # the cells at lr 1e-3, batch 4: the level, and lr scaled by 4 / 2 as trained
    rows = [line.split() for line in result.output.splitlines() if "bs4_train.lr=0.001" in line]
    assert [(r[5], r[7]) for r in rows] == [("0.001", "0.002")] * 2
    text = _words(result.output)
    assert "8 cells × 1 seed = 8 trials, served by 4 training runs" in text
    assert ("factors: image_size, dataset_size, epochs, batch_size, train.lr; "
            "nuisance: train.lr") in text  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ("  data.val_size: [4, 6]\n", ("factors.data.val_size", "cannot vary per cell")),
        ("  train.lrr: [1e-3]\n", ("factors.train.lrr", "did you mean 'train.lr'")),
        ("  train.lr: [1e-3, -1]\n", ("factors.train.lr", "level -1 is refused")),
        ("  grouped:\n    - {batch_size: 2, train.lr: 3e-4}\n",
         ("factors.grouped[0].batch_size", "crossed or grouped")),
    ],
)  # fmt: skip
def test_plan_refuses_a_setting_factor_in_one_line(tmp_path: Path, extra, needles) -> None:
    text = "factors:\n  image_size: [16]\n  dataset_size: [8]\n  epochs: [1]\n  batch_size: [2]\n"
    result = runner.invoke(app, ["plan", str(_write(tmp_path / "grid.yaml", text + extra))])
    _assert_one_clean_error_line(result, *needles)


def test_status_lists_the_setting_factors(tmp_path: Path) -> None:
    grid = load_grid(_write(tmp_path / "grid.yaml", _FIVE))
    claim_study(Storage(tmp_path / "run"), grid.resolved_yaml())
    result = runner.invoke(app, ["status", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    text = _words(result.output)
    assert "0 ok, 0 running, 0 not ok, 8 missing of 8" in text
    assert "factor train.lr: 0.0003, 0.001" in text


MID_GRID = (
    "name: mid\n"
    "factors: {image_size: [32, 64], dataset_size: [8, 16], epochs: [4], batch_size: [2, 4, 8]}\n"
    f"seeds: {list(range(25))}\n"
)


def _mid_grid(study: Storage, grid_file: Path) -> tuple[list, list, list]:
    """300 trials as the driver leaves them mid-grid: 270 finished (every 30th failed),
    3 running (progress.json), 27 missing, in every cell; the finished trials' rows in
    parts, merged as they piled up and not compacted. Returns (ok, failed, running)."""
    grid = load_grid(grid_file)
    claim_study(study, grid.resolved_yaml())
    results, trials = Results(study), grid.trials()
    done, rest = [t for i, t in enumerate(trials) if i % 10], trials[::10]
    ok, failed = [], []
    for n, trial in enumerate(done):
        (run,) = training_runs(grid, [trial])
        identity = trial_info(grid, run, trial)
        results.start(trial.trial_id)
        gain = 0.1 * (trial.cell.image_size == 64) + 0.001 * trial.seed
        for epoch in range(1, 5):
            metrics = {"val_iou": 0.4 + gain + 0.05 * epoch, "step": 2 * epoch}
            results.add_epoch(identity, _epoch(identity, epoch, **metrics))
        status = Status.FAILED if n % 30 == 29 else Status.OK
        results.finish(identity, status, "node lost" if status is Status.FAILED else None)
        (failed if status is Status.FAILED else ok).append(trial.trial_id)
    running = {t.trial_id: 2 for t in rest[:3]}
    study.write_text("progress.json", Progress(time.time(), running).to_json())
    return ok, failed, list(running)


@pytest.fixture(scope="module")
def mid_grid(tmp_path_factory) -> Iterator[tuple[Path, list, list, list]]:
    """The mid-grid study in a folder, its driver's lock held: (folder, ok, failed,
    running)."""
    from gridrun.store import StudyLock

    folder = tmp_path_factory.mktemp("mid")
    source = Storage(folder / "study")
    with StudyLock(source):
        ok, failed, running = _mid_grid(source, _write(folder / "grid.yaml", MID_GRID))
        yield folder / "study", ok, failed, running


@pytest.mark.parametrize("where", ["local", "s3"])
def test_status_and_report_mid_grid(where, mid_grid, tmp_path, request, monkeypatch) -> None:
    folder, ok, failed, running = mid_grid
    study = Storage(folder)
    assert study.list("trials.parts") and not study.exists("trials.parquet")
    if where == "s3":  # the same objects on the S3-compatible server
        study = Storage(request.getfixturevalue("s3_uri"))
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            study.upload(path, path.relative_to(folder).as_posix())
    read: list[str] = []
    read_bytes = Storage.read_bytes

    def recorded(self: Storage, rel: str) -> bytes:
        read.append(rel)
        return read_bytes(self, rel)

    monkeypatch.setattr(Storage, "read_bytes", recorded)
    result = runner.invoke(app, ["status", study.uri])
    assert result.exit_code == 0, result.output
    assert f"{study}: {len(ok)} ok, 3 running, {len(failed)} not ok, 27 missing of 300" in (
        _words(result.output)
    )
    assert f"running {running[0]} epoch 2" in _words(result.output)
    # status needs the trials only: no curve part is read
    assert read and not [rel for rel in read if "curves" in rel]
    # the first 20 missing trials are listed, and --all lists all 27
    listed = _words(result.output).split("missing: ")[1].split(" (")[0].split(", ")
    assert len(listed) == 20 and "(7 more missing: gridrun status --all lists them)" in (
        _words(result.output)
    )
    every = runner.invoke(app, ["status", study.uri, "--all"])
    assert len(_words(every.output).split("missing: ")[1].split(", ")) == 27

    result = runner.invoke(app, ["report", study.uri, "--to", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    cells = pd.read_csv(tmp_path / "report" / "tables" / "cells.csv")
    # the finished trials that are ok, each cell's seeds among them; the best cells are 64 px
    assert cells["n"].sum() == len(ok) and len(cells) == 12
    assert (cells["image_size"].head(6) == 64).all()
