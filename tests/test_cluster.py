"""A grid submitted to a real two-node Ray cluster through the Jobs API, as docs/cluster.md
tells a user to: `ray start` twice on this machine (one CPU per node), then
`ray job submit --working-dir <repo> -- gridrun run GRID --address auto --out s3://…`
(moto, see fixtures_s3.py).

The cluster belongs to this test alone. `ray stop` would stop every Ray process on the
machine (other test sessions' clusters too), so the fixture marks the processes it starts
with an environment variable of its own, which every Ray daemon, worker and job driver
inherits, and ends exactly those, by process id.

The test takes about 1½ minutes on 2 cores: ~15 s to start the cluster, ~1 min the job."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from fixtures_s3 import free_port

from gridrun.spec import load_grid
from gridrun.storage import Storage

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARK = "GRIDRUN_TEST_CLUSTER"
JOB_TIMEOUT_S = 900


@dataclass
class LocalCluster:
    """Two `ray start` nodes on 127.0.0.1: the head (resource node_a) and a worker
    (node_b), one CPU each."""

    dashboard: str  # http://127.0.0.1:PORT, where `ray job submit` goes
    env: dict[str, str]  # what the Ray processes were started with (marker included)
    working_dir: Path  # a snapshot of the repository, what the jobs upload
    node_ids: set[str] = field(default_factory=set)

    def submit(self, *entrypoint: str, env_vars: dict[str, str] | None = None):
        """`ray job submit` with the repository as working_dir; waits for the job."""
        command = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard]
        command += ["--working-dir", str(self.working_dir)]
        if env_vars:
            command += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
        return subprocess.run(
            [*command, "--", *entrypoint],
            env=self.env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
        )  # fmt: skip


def _marked(token: str) -> list[int]:
    """Ids of this user's processes whose environment holds MARK=token."""
    wanted = f"{MARK}={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if wanted in environ.split(b"\0"):
            pids.append(int(entry))
    return pids


def _end(token: str, grace_s: float = 5.0) -> None:
    """SIGTERM every marked process, then SIGKILL what is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _marked(token):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while _marked(token) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not _marked(token):
            return


def _ray_start(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [str(BIN / "ray"), "start", "--disable-usage-stats", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"ray start {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def _alive_nodes(dashboard: str) -> set[str]:
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=dashboard, timeout=10, raise_on_missing_output=False)
    except Exception:  # the dashboard is still starting
        return set()
    return {n.node_id for n in nodes if n.state == "ALIVE"}


def _snapshot(target: Path) -> Path:
    """The repository as `ray job submit --working-dir .` would upload it, copied once.
    note: Ray names the package by a hash of the directory and then zips it; a file
    edited in between (seen on a shared checkout) made a job ask for a package that was
    never uploaded."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "runs", "__pycache__", "*.egg-info", ".*_cache", "build"
    )
    shutil.copytree(REPO, target, ignore=ignore)
    return target


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the cluster fixture finds its processes through /proc")
    token = uuid.uuid4().hex
    # note: a short path: Ray's Unix sockets live under it (108-byte limit). Each node
    # gets its own: nodes sharing one would share runtime_resources/, and one node's
    # runtime-env agent deletes a job's working_dir while the other's driver runs in it
    temp_dir = tempfile.mkdtemp(prefix="grc-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update({
        MARK: token,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `gridrun`
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        # a loaded CI machine can take more than the default 60 s to start a worker
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
    })  # fmt: skip
    gcs, dashboard = free_port(), free_port()
    try:
        # note: every fixed default port is given a free one, since both nodes (and
        # anyone else's cluster) share this machine; the rest default to random ports
        _ray_start(
            env, "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=1", "--num-gpus=0",
            '--resources={"node_a": 1}', f"--temp-dir={temp_dir}/a",
        )  # fmt: skip
        _ray_start(
            env, f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1",
            f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=1", "--num-gpus=0",
            '--resources={"node_b": 1}', f"--temp-dir={temp_dir}/b",
        )  # fmt: skip
        source = _snapshot(tmp_path_factory.mktemp("cluster") / "gridrun")
        running = LocalCluster(f"http://127.0.0.1:{dashboard}", env, source)
        deadline = time.monotonic() + 180
        while len(running.node_ids) < 2 and time.monotonic() < deadline:
            running.node_ids = _alive_nodes(running.dashboard)
            time.sleep(1)
        assert len(running.node_ids) == 2, f"nodes alive: {running.node_ids}"
        yield running
    finally:
        _end(token)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _tiny_grid(tmp_path: Path) -> Path:
    """4 trials of a 4-channel, 2-level U-Net, one epoch at 32 px, one CPU per worker."""
    grid = {
        "name": "cluster",
        "data": {"source": "synthetic", "val_size": 2},
        "model": {"base_channels": 4, "depth": 2},
        "factors": {"image_size": [32], "dataset_size": [4, 8], "epochs": [1],
                    "batch_size": [2, 4]},
        "resources": {"cpus_per_worker": 1},
    }  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _assert_every_trial_ran_ok_on_both_nodes(
    study: Storage, grid_file: Path, cluster: LocalCluster
) -> None:
    trials = study.read_parquet("trials.parquet")
    curves = study.read_parquet("curves.parquet")
    expected = sorted(t.trial_id for t in load_grid(grid_file).trials())
    assert sorted(trials["run_id"]) == expected
    assert trials["status"].tolist() == ["ok"] * 4, trials[["run_id", "status", "error"]]
    assert sorted(curves["run_id"]) == expected  # one epoch each
    assert curves["val_iou"].notna().all()
    assert all(study.exists(checkpoint) for checkpoint in trials["checkpoint"])
    # two trainings at a time, one CPU each, one CPU per node: both nodes trained
    assert set(trials["node_id"]) == cluster.node_ids


def _job_output(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def test_a_grid_submitted_as_a_job_trains_on_both_nodes_into_s3(
    cluster, s3_server, s3_uri, tmp_path
):
    # note: one job for both: a local --out differs only in the Storage the driver opens,
    # which every other Ray test exercises; a second job cost ~65 s of the suite
    grid_file = _tiny_grid(tmp_path)
    started = time.monotonic()
    # note: as in docs/cluster.md, --out comes from GRIDRUN_OUT in the driver's
    # environment; that and the S3 endpoint and credentials reach the driver and every
    # worker through the job's runtime environment (the cluster started without them)
    command = f'gridrun run {grid_file} --address auto --out "$GRIDRUN_OUT"'
    done = cluster.submit("sh", "-c", command, env_vars={**s3_server.env, "GRIDRUN_OUT": s3_uri})
    print(f"job took {time.monotonic() - started:.0f}s")
    assert done.returncode == 0, _job_output(done)
    study = Storage(s3_uri)
    _assert_every_trial_ran_ok_on_both_nodes(study, grid_file, cluster)
    assert study.exists("grid.yaml")
    assert study.list("ray", recursive=True)  # Ray Tune's own state went to S3 too
