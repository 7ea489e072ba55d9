"""A study on object storage survives its driver: one writer at a time, and a driver
killed mid-grid is resumed by the next run from what the bucket holds, without training
anything finished again; `status` and `report --to` read the same URI from other
processes. Real `gridrun run` processes, each with its own local Ray, against the
S3-compatible server of the session."""

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

from gridrun.storage import Storage, read_tables

pytestmark = pytest.mark.ray


def _gridrun(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, **env, "RAY_AUTH_MODE": "disabled"}
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


def _rows(study: Storage) -> pd.DataFrame:
    """The trials as a reader sees them, mid-run (parts) or after (the table)."""
    trials, _ = read_tables(study, curves=False)
    return pd.DataFrame() if trials is None else trials


def test_one_driver_at_a_time_and_a_killed_driver_resumes_from_the_bucket(
    tmp_path: Path, s3_server, s3_uri: str
) -> None:
    env = s3_server.env
    grid = {
        "name": "resume",
        "data": {"source": "synthetic", "val_size": 2},
        "model": {"base_channels": 4, "depth": 2},
        "factors": {"image_size": [32], "dataset_size": [8], "epochs": [3],
                    "batch_size": [2]},
        "seeds": [0, 1, 2, 3, 4, 5],
        "resources": {"max_concurrent_units": 1},
    }  # fmt: skip
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    out = s3_uri
    study = Storage(out)
    first = _gridrun("run", str(grid_file), "--out", out, env=env)
    try:
        _wait_for(lambda: study.exists("lock.json"), 60, "the first driver's lock")
        second = _gridrun("run", str(grid_file), "--out", out, env=env)
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 2, output
        assert f"process {first.pid} on {socket.gethostname()}" in " ".join(output.split())
        assert "Traceback" not in output

        _wait_for(lambda: len(_rows(study)) >= 2, 240, "two finished trials")
        os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    before = _rows(study).set_index("run_id")
    assert 2 <= len(before) < 6

    again = _gridrun("run", str(grid_file), "--out", out, env=env)
    output, _ = again.communicate(timeout=400)
    assert again.returncode == 0, output
    after = _rows(study)
    # every (cell, seed) once, every one ok, and what had finished was not run again
    assert sorted(after["seed"]) == [0, 1, 2, 3, 4, 5]
    assert (after["status"] == "ok").all()
    kept = after.set_index("run_id").loc[before.index]
    assert kept["finished_at"].tolist() == before["finished_at"].tolist()
    assert f"{len(before)} already done" in " ".join(output.split())
    # the finished study is two tables: the parts the drivers appended are compacted
    assert study.list("trials.parts") == [] and study.list("curves.parts") == []
    assert len(study.read_parquet("trials.parquet")) == 6
    curves = study.read_parquet("curves.parquet")
    assert sorted(curves.groupby("run_id")["epoch"].apply(tuple)) == [(1, 2, 3)] * 6
    assert not study.exists("lock.json")
    # everything a study holds is in the bucket: only the rows' checkpoints stay
    assert study.exists("grid.yaml")
    assert sorted(study.list("checkpoints")) == sorted(f"{r}.pt" for r in after["run_id"])

    # status and report, from other processes, on the same URI
    status = _gridrun("status", out, env=env)
    text = " ".join(status.communicate(timeout=60)[0].split())
    assert f"{out}: 6 ok, 0 running, 0 not ok, 0 missing of 6" in text
    report = _gridrun("report", out, "--to", str(tmp_path / "report"), env=env)
    output, _ = report.communicate(timeout=120)
    assert report.returncode == 0, output
    assert (tmp_path / "report" / "index.html").stat().st_size > 10_000
    assert (tmp_path / "report" / "tables" / "cells.csv").exists()
