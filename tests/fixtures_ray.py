"""One Ray cluster for the whole session, and tiny grids to run on it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gridrun.cli import app

runner = CliRunner()


@pytest.fixture(scope="session")
def ray_cluster():
    """Two nodes of one CPU and one `fake_gpu` each: trials really spread over nodes,
    and GPU-style packing is tested on CPUs."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    cluster = Cluster()
    for _ in range(2):
        cluster.add_node(num_cpus=1, resources={"fake_gpu": 1}, include_dashboard=False)
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def grid_file(tmp_path: Path, name: str, factors: dict, val_size: int, **sections) -> Path:
    """A tiny synthetic grid file: a 4-channel, 2-level U-Net unless `model` is given."""
    grid = {
        "name": name,
        "data": {"source": "synthetic", "val_size": val_size},
        "model": {"base_channels": 4, "depth": 2},
        "factors": {k: [v] if isinstance(v, int) else v for k, v in factors.items()},
        **sections,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def run_cli(grid: Path, out: Path | str, *extra: str):
    return runner.invoke(app, ["run", str(grid), "--out", str(out), *extra])


def run_own_ray(tmp_path: Path, script: str, *args: str, timeout: int) -> str:
    """`script` run by this Python in a process of its own, with the repository on its
    path, for a test that starts a Ray of its own (`ray.init(address="local", ...)`), so
    that a Ray driver dying there cannot end pytest; its stdout, once it exits 0."""
    path = tmp_path / f"own_ray_{len(list(tmp_path.glob('own_ray_*.py')))}.py"
    path.write_text(script)
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(repo)}, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout
