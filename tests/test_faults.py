"""Faults as data: injected into real workers on the session's Ray cluster. A worker
killed mid-run restarts from its last epoch; a run that raises or runs out of memory is
that run's row, and the work unit goes on with the next run."""

from __future__ import annotations

import pandas as pd
import pytest
from fixtures_ray import grid_file, run_cli

pytestmark = pytest.mark.ray


def test_injected_faults_end_as_rows_and_a_killed_worker_resumes(
    ray_cluster, tmp_path, monkeypatch
):
    factors = {"image_size": 16, "dataset_size": 4, "epochs": 6, "batch_size": [1, 2, 4]}
    grid = grid_file(
        tmp_path, "faults", factors, val_size=2, resources={"max_concurrent_units": 1}
    )
    monkeypatch.setenv(
        "GRIDRUN_FAULTS",
        "kill@img16_n4_ep6_bs1_s0:3,raise@img16_n4_ep6_bs2_s0:2,oom@img16_n4_ep6_bs4_s0:1",
    )
    out = tmp_path / "study"
    result = run_cli(grid, out)
    assert result.exit_code == 1, result.output  # some trials are not ok
    assert "3 training runs in 1 work unit" in " ".join(result.output.split())
    trials = pd.read_parquet(out / "trials.parquet").set_index("batch_size")
    curves = pd.read_parquet(out / "curves.parquet")
    assert trials["status"].to_dict() == {1: "ok", 2: "failed", 4: "infeasible"}
    assert "injected fault" in trials.loc[2, "error"]
    assert trials.loc[4, "error"].startswith("OutOfMemoryError")

    # the killed run: every epoch once; epochs 1-3 came from the first worker process and
    # were not trained again by the restarted one, which went on from epoch 4
    killed = curves[curves["batch_size"] == 1].sort_values("epoch")
    assert killed["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    first, restarted = set(killed["worker_pid"][:3]), set(killed["worker_pid"][3:])
    assert len(first) == 1 and len(restarted) == 1 and first != restarted
    assert killed["step"].tolist() == [4, 8, 12, 16, 20, 24]
    # the failed run keeps its curve up to the fault; the run out of memory has none
    assert curves[curves["batch_size"] == 2]["epoch"].tolist() == [1]
    assert curves[curves["batch_size"] == 4].empty
    # only the rows' checkpoints are kept
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [
        "img16_n4_ep6_bs1_s0.pt"
    ]
