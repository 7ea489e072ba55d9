"""A study survives its driver: one writer at a time, and a driver killed mid-grid is
resumed by the next run without training anything finished again. Real `gridrun run`
processes, each with its own local Ray."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.ray


def _gridrun(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(
        [sys.executable, "-m", "gridrun", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
        **kwargs,
    )


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _rows(out: Path) -> pd.DataFrame:
    path = out / "trials.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def test_one_driver_at_a_time_and_a_killed_driver_resumes(tmp_path: Path) -> None:
    grid = {
        "name": "resume",
        "data": {"source": "synthetic", "val_size": 2},
        "model": {"base_channels": 4, "depth": 2},
        "factors": {"image_size": [32], "dataset_size": [8], "epochs": [3],
                    "batch_size": [2]},
        "seeds": [0, 1, 2, 3, 4, 5],
        "resources": {"max_concurrent_trials": 1},
    }  # fmt: skip
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    out = tmp_path / "study"
    first = _gridrun("run", str(grid_file), "--out", str(out))
    try:
        _wait_for(lambda: (out / "lock.json").exists(), 60, "the first driver's lock")
        second = _gridrun("run", str(grid_file), "--out", str(out))
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 2, output
        assert f"process {first.pid} on {socket.gethostname()}" in " ".join(output.split())
        assert "Traceback" not in output

        _wait_for(lambda: len(_rows(out)) >= 2, 240, "two finished trials")
        os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    before = _rows(out).set_index("run_id")
    assert 2 <= len(before) < 6

    again = _gridrun("run", str(grid_file), "--out", str(out))
    output, _ = again.communicate(timeout=400)
    assert again.returncode == 0, output
    after = _rows(out)
    # every (cell, seed) once, every one ok, and what had finished was not run again
    assert sorted(after["seed"]) == [0, 1, 2, 3, 4, 5]
    assert (after["status"] == "ok").all()
    kept = after.set_index("run_id").loc[before.index]
    assert kept["finished_at"].tolist() == before["finished_at"].tolist()
    assert f"{len(before)} already done" in " ".join(output.split())
    curves = pd.read_parquet(out / "curves.parquet")
    assert sorted(curves.groupby("run_id")["epoch"].apply(tuple)) == [(1, 2, 3)] * 6
    assert not (out / "lock.json").exists()
