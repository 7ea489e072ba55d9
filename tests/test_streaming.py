"""The streaming path: when it turns on, and that it trains exactly like the in-memory
path (same batches, same metrics), also on a data set 3× the object store."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures_ray import run_cli, run_own_ray, runner
from PIL import Image

from gridrun.cli import app
from gridrun.spec import load_grid
from gridrun.streaming import choose_path, prepared_mb


def _folder(root: Path, n: int, size: int, grey: tuple[int, ...] = ()) -> Path:
    """n smooth RGB images (the `grey` ones single-channel) with blob masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = rng.integers(0, size, 3) // 2 + size // 4
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8) * 255
        base = (xx * 255 // size).astype(np.uint8)
        image = np.stack([base, mask // 2 + 60, 255 - base], -1).astype(np.uint8)
        if i in grey:
            image = image[:, :, 0]
        Image.fromarray(image).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")
    return root


def _grid(tmp_path: Path, data: dict, factors: dict, **sections) -> Path:
    grid = {
        "name": "stream",
        "data": {"source": "folder", **data},
        "model": {"base_channels": 4, "depth": 2},
        "factors": {k: v if isinstance(v, list) else [v] for k, v in factors.items()},
        **sections,
    }
    path = tmp_path / f"grid-{len(list(tmp_path.glob('grid-*')))}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_the_budget_decides_the_path_and_the_line_says_why(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", 10, 8)
    factors = {"image_size": [16, 32], "dataset_size": 6, "epochs": 1, "batch_size": 2}
    grid = load_grid(_grid(tmp_path, {"path": str(root), "val_size": 3}, factors))
    # 6 training images with masks and 3 validated, at 16 and 32 px; truth at 32 px
    expected = ((6 * 4 + 3 * 3) * (16**2 + 32**2) + 3 * 32**2) / 2**20
    assert prepared_mb(grid, 3) == pytest.approx(expected)
    small = choose_path(grid, 100.0, 400 * 2**20)
    assert not small.stream
    assert small.line == (
        "data: in memory, 100 MB prepared ≤ 200 MB "
        "(data.memory_budget_mb unset: 0.5 of the object store)"
    )
    assert choose_path(grid, 300.0, 400 * 2**20).stream
    tight = load_grid(
        _grid(tmp_path, {"path": str(root), "val_size": 3, "memory_budget_mb": 50}, factors)
    )
    line = choose_path(tight, 60.0, 400 * 2**20)
    assert line.stream
    assert line.line == (
        "data: streamed through Ray Data, 60 MB prepared > 50 MB (data.memory_budget_mb)"
    )
    synthetic = load_grid(_grid(tmp_path, {"source": "synthetic", "val_size": 3}, factors))
    assert not choose_path(synthetic, 10**6, 1.0).stream


def test_plan_says_which_path_the_data_takes(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", 10, 8)
    factors = {"image_size": 8, "dataset_size": 6, "epochs": 1, "batch_size": 2}
    lines = {}
    for budget in ({}, {"memory_budget_mb": 0}):
        grid = _grid(tmp_path, {"path": str(root), "val_size": 3, **budget}, factors)
        result = runner.invoke(app, ["plan", str(grid)])
        assert result.exit_code == 0, result.output
        lines[bool(budget)] = next(
            line
            for line in result.output.splitlines()
            if line.startswith("data: ") and "MB" in line
        )
    assert lines[False] == (
        "data: 0.0022 MB prepared; streamed through Ray Data if over data.memory_budget_mb "
        "(default 0.5 of the cluster's object store), else in memory"
    )
    assert (
        lines[True]
        == "data: streamed through Ray Data, 0.0022 MB prepared > 0 MB (data.memory_budget_mb)"
    )


@pytest.mark.ray
def test_a_broken_file_stops_streamed_preparation_with_one_line(ray_cluster, tmp_path):
    from gridrun.data import DataError
    from gridrun.storage import Storage
    from gridrun.streaming import prepare_streamed

    root = _folder(tmp_path / "data", 6, 8)
    (root / "images" / "0004.png").write_bytes(b"not a png")
    factors = {"image_size": 8, "dataset_size": 3, "epochs": 1, "batch_size": 2}
    grid = load_grid(_grid(tmp_path, {"path": str(root), "val_size": 2}, factors))
    with pytest.raises(DataError, match=r"0004\.png"):
        prepare_streamed(grid, Storage(tmp_path / "study"))


def _curves(out: Path) -> pd.DataFrame:
    curves = pd.read_parquet(out / "curves.parquet").sort_values(["run_id", "epoch"])
    return curves.reset_index(drop=True)


@pytest.mark.ray
def test_streamed_and_in_memory_runs_give_the_same_metrics(ray_cluster, tmp_path: Path) -> None:
    # a grey image among colour ones; a last batch of 2; a test split; two workers
    root = _folder(tmp_path / "data", 13, 20, grey=(3,))
    data = {"path": str(root), "val_size": 3, "test_size": 2}
    factors = {"image_size": 16, "dataset_size": 6, "epochs": 2, "batch_size": 4}
    sections = {"resources": {"workers_per_unit": 2}, "tracking": {"overlay_images": 2}}
    outs = {}
    for name, budget in (("memory", {}), ("stream", {"memory_budget_mb": 0})):
        grid = _grid(tmp_path, {**data, **budget}, factors, **sections)
        outs[name] = tmp_path / name
        result = run_cli(grid, outs[name])
        assert result.exit_code == 0, result.output
        path = "streamed through Ray Data" if budget else "in memory"
        assert f"data: {path}" in result.output
    memory, stream = _curves(outs["memory"]), _curves(outs["stream"])
    assert len(memory) == 2 and (memory["world_size"] == 2).all()
    assert memory["run_id"].tolist() == stream["run_id"].tolist()
    for column in ("train_loss", "val_loss", "val_iou", "test_loss", "test_iou", "step"):
        assert stream[column].tolist() == pytest.approx(memory[column].tolist(), rel=1e-6)
    assert (stream["val_pixels"] == 3 * 16 * 16).all()
    assert json.loads((outs["stream"] / "baselines.json").read_text()) == json.loads(
        (outs["memory"] / "baselines.json").read_text()
    )
    # the overlays' predictions: the same first validation images on both paths
    for rel in sorted(p.relative_to(outs["memory"]) for p in outs["memory"].rglob("*pred*.npz")):
        with np.load(outs["memory"] / rel) as a, np.load(outs["stream"] / rel) as b:
            assert (a["pred"] == b["pred"]).all()


_BIG_RUN = """
import logging, os, sys
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
import ray
ray.init(address="local", num_cpus=2, object_store_memory={store}, include_dashboard=False,
         log_to_driver=False, logging_level=logging.ERROR)
from gridrun.cli import app
app(["run", sys.argv[1], "--out", sys.argv[2]])
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_data_set_three_times_the_object_store_trains_to_the_end(tmp_path: Path) -> None:
    store = 80 * 2**20
    # 16 training and 234 validation images at 512 px: 250 MB prepared, 3.1× the store
    root = _folder(tmp_path / "data", 250, 512)
    factors = {"image_size": 512, "dataset_size": 16, "epochs": 1, "batch_size": 8}
    # note: the data path is under test, not the model: a 1-channel, 1-level U-Net
    # validates the 234 images in ~8 s of a core where the default test model takes ~32 s
    grid = _grid(
        tmp_path, {"path": str(root), "val_size": 234}, factors,
        model={"base_channels": 1, "depth": 1},
    )  # fmt: skip
    assert prepared_mb(load_grid(grid), 3) > 3 * store / 2**20
    out = tmp_path / "run"
    script = textwrap.dedent(_BIG_RUN.format(store=store))
    printed = run_own_ray(tmp_path, script, str(grid), str(out), timeout=600)
    assert "data: streamed through Ray Data" in printed
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials["status"].tolist() == ["ok"]
    curves = pd.read_parquet(out / "curves.parquet")
    assert curves["val_pixels"].tolist() == [234 * 512 * 512]
