"""A real S3-compatible server for the tests: moto on 127.0.0.1, one bucket.

A pytest plugin (registered in conftest.py through ``pytest_plugins``). `s3_server`
starts moto once per session and sets the standard AWS variables, so pyarrow, boto3 and
every Ray process started afterwards reach it through a plain ``s3://bucket/prefix``;
`s3_uri` gives each test a prefix of its own."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

BUCKET = "gridrun-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    env: dict[str, str]  # what a process needs to reach it (pass to Ray's runtime env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"moto did not listen on 127.0.0.1:{port} within {timeout_s}s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto serving one bucket; AWS_* set for this process (and what it starts) until
    the session ends, restored afterwards."""
    server_module = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    # note: a thread, not a subprocess, so it cannot outlive the test process
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        with pytest.MonkeyPatch.context() as patch:
            for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE"):
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, value)
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            yield S3Server(endpoint=endpoint, bucket=BUCKET, env=env)
    finally:
        server.stop()


@pytest.fixture
def s3_uri(s3_server: S3Server) -> str:
    """``s3://<bucket>/<fresh prefix>``: nothing under it yet."""
    return f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:12]}"
