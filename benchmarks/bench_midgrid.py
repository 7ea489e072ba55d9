"""`gridrun status` and `gridrun report` on a study caught mid-grid, on local disk and on
an S3-compatible server (moto, as in the tests).

The study is written by the driver's own code (`Results`, as `gridrun run` appends each
finished trial's rows as a part of both tables; parts merged as they pile up, never
compacted): of `--trials` trials (cells × 4 seeds, `--epochs` epochs each), 90 % finished
(1 in 50 of them failed), 1 % running (named in progress.json under a live lock) and
the rest missing. The same files are then copied to the S3 server. Prints the wall time
of each command on each store (in process, through Typer's test runner). Usage:

    python benchmarks/bench_midgrid.py [--trials 10000] [--epochs 80] [--no-s3]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from gridrun.cli import app
from gridrun.layout import PROGRESS_FILE, Progress, Status
from gridrun.records import EpochReport, WorkerInfo
from gridrun.runs import training_runs, trial_info
from gridrun.spec import parse_grid
from gridrun.storage import Storage
from gridrun.store import Results, StudyLock, claim_study

WORKER = WorkerInfo("10.0.0.7", "a1b2c3", 4321)
SEEDS = 4


def _levels(cells: int) -> tuple[int, int, int]:
    """Image, data set and batch levels with a product of at least `cells`."""
    side = max(2, round(cells ** (1 / 3)))
    batches = max(2, -(-cells // (side * side)))
    return side, side, batches


def _report(trial: str, epoch: int, epochs: int, asymptote: float) -> EpochReport:
    val = asymptote * (1 - np.exp(-4 * epoch / epochs))
    metrics = {
        "train_loss": 1.0 - 0.5 * val, "train_iou": val + 0.05, "val_loss": 1.1 - 0.5 * val,
        "val_iou": val, "val_dice": min(1.0, 1.2 * val), "val_precision": 0.6,
        "val_recall": 0.5, "val_pixel_acc": 0.9, "lr": 1e-3, "step": 16 * epoch,
        "epoch_time_s": 0.5, "train_time_s": 0.5 * epoch, "peak_mem_mb": 350.0,
    }  # fmt: skip
    return EpochReport(trial, epoch, Status.OK, metrics, 1_234_567, 1, "cpu", None, WORKER)


def write_mid_grid(study: Storage, trials: int, epochs: int) -> tuple[int, int, int]:
    """The study as the driver leaves it mid-grid, of at least `trials` trials (the grid's
    levels round up); returns (trials, finished, running)."""
    images, datasets, batches = _levels(-(-trials // SEEDS))
    grid = parse_grid(
        {
            "name": "midgrid",
            "factors": {
                "image_size": [32 * (i + 1) for i in range(images)],
                "dataset_size": [64 * (i + 1) for i in range(datasets)],
                "epochs": [epochs],
                "batch_size": [2 * (i + 1) for i in range(batches)],
            },
            "seeds": list(range(SEEDS)),
        }
    )
    claim_study(study, grid.resolved_yaml())
    every = grid.trials()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(every))
    finished, running = int(0.9 * len(every)), max(1, len(every) // 100)
    results = Results(study)
    for n, i in enumerate(order[:finished]):
        trial = every[i]
        run = training_runs(grid, [trial])[0]
        info = trial_info(grid, run, trial)
        f = trial.cell.factors()
        asymptote = 0.5 + 0.1 * np.log2(f["image_size"] / 32) / images + rng.normal(0, 0.01)
        results.start(trial.trial_id)
        for epoch in range(1, epochs + 1):
            results.add_epoch(info, _report(run.id, epoch, epochs, asymptote))
        if n % 50 == 49:
            results.finish(info, Status.FAILED, "node lost")
        else:
            results.finish(info, Status.OK)
    progress = {every[i].trial_id: epochs // 2 for i in order[finished : finished + running]}
    study.write_text(PROGRESS_FILE, Progress(time.time(), progress).to_json())
    return len(every), finished, running


def _copy(source: Path, target: Storage) -> None:
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target.upload(path, path.relative_to(source).as_posix())


def _time(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = CliRunner().invoke(app, args)
    wall = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"gridrun {' '.join(args)} failed: {result.output}{result.exception}")
    return wall, result.output.splitlines()[0]


def _s3() -> tuple[object, str]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # note: one line per request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
    )  # fmt: skip
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return server, f"s3://bench/{uuid.uuid4().hex}/study"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--no-s3", action="store_true", help="local disk only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "study"
        study = Storage(local)
        started = time.perf_counter()
        with StudyLock(study):
            total, finished, running = write_mid_grid(study, args.trials, args.epochs)
            parts = len(study.list("trials.parts")) + len(study.list("curves.parts"))
            print(
                f"{total} trials, {finished} finished, {running} running, {parts} parts "
                f"uncompacted; written in {time.perf_counter() - started:.0f} s"
            )
            places = [("local", str(local))]
            if not args.no_s3:
                server, uri = _s3()
                _copy(local, Storage(uri))
                places.append(("s3", uri))
            for where, location in places:
                status_s, line = _time(["status", location])
                report_s, _ = _time(["report", location, "--to", f"{tmp}/report-{where}"])
                print(f"{where}: status {status_s:.1f} s ({line}); report {report_s:.1f} s")
        if not args.no_s3:
            server.stop()


if __name__ == "__main__":
    main()
