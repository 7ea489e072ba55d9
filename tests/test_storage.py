"""Storage: every behaviour on a local directory and on a real S3-compatible server
(moto, see fixtures_s3.py)."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from gridrun.storage import Storage, StorageError


@pytest.fixture(params=["local", "s3"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(tmp_path / "study")
    return Storage(request.getfixturevalue("s3_uri"))


def _everything(study: Storage) -> list[str]:
    """Every file under the study as the filesystem itself lists it, temporaries included."""
    fs, root = pafs.FileSystem.from_uri(study.uri if not study.is_local else f"file://{study.uri}")
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return sorted(
        info.path[len(root) + 1 :]
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File
    )


def test_local_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = Storage("runs/quick")
    assert study.is_local
    assert study.uri == str(tmp_path / "runs" / "quick") == str(study)
    assert study.local_path() == tmp_path / "runs" / "quick"
    assert study.local_path("a/b.pt") == tmp_path / "runs" / "quick" / "a" / "b.pt"
    assert study.join("a/b.pt") == str(tmp_path / "runs" / "quick" / "a" / "b.pt")
    assert Storage(f"file://{tmp_path}/x").uri == str(tmp_path / "x")


def test_uris_are_kept_with_their_query(s3_server):
    study = Storage(f"s3://{s3_server.bucket}/runs/study/")
    assert not study.is_local
    assert study.local_path() is None and study.local_path("a") is None
    assert study.uri == f"s3://{s3_server.bucket}/runs/study" == str(study)
    assert study.join("ray") == f"s3://{s3_server.bucket}/runs/study/ray"
    assert study.child("ray").uri == study.join("ray")
    query = "endpoint_override=127.0.0.1:9&scheme=http"
    with_query = Storage(f"s3://{s3_server.bucket}/p?{query}")
    assert with_query.uri == f"s3://{s3_server.bucket}/p?{query}"
    assert with_query.join("a/b") == f"s3://{s3_server.bucket}/p/a/b?{query}"
    assert with_query.child("a").join("b") == with_query.join("a/b")


def test_round_trips(study):
    frame = pd.DataFrame({"run_id": ["a", "b"], "seed": [0, 1], "val_iou": [0.5, float("nan")]})
    study.write_bytes("blob.bin", b"\x00\x01\xff")
    study.write_text("deep/er/grid.yaml", "name: ünïcode\n")
    study.write_parquet("trials.parquet", frame)
    assert study.read_bytes("blob.bin") == b"\x00\x01\xff"
    assert study.read_text("deep/er/grid.yaml") == "name: ünïcode\n"
    pd.testing.assert_frame_equal(study.read_parquet("trials.parquet"), frame)
    assert study.exists("blob.bin") and study.exists("deep/er") and study.exists("")


def test_missing_files(study):
    assert not study.exists("nothing")
    with pytest.raises(FileNotFoundError):
        study.read_bytes("nothing")
    with pytest.raises(FileNotFoundError):
        study.read_text("no/such.txt")
    assert study.read_parquet("trials.parquet").empty
    assert study.list() == [] and study.list("nothing", recursive=True) == []
    study.delete("nothing")
    with pytest.raises(FileNotFoundError):
        study.download("nothing", Path("/nonexistent-target"))


def test_a_rewrite_replaces_the_file_and_leaves_no_temporaries(study):
    study.write_bytes("t.bin", b"old" * 1000)
    study.write_parquet("trials.parquet", pd.DataFrame({"a": [1]}))
    study.write_bytes("t.bin", b"new")
    study.write_parquet("trials.parquet", pd.DataFrame({"a": [2]}))
    assert study.read_bytes("t.bin") == b"new"
    assert study.read_parquet("trials.parquet")["a"].tolist() == [2]
    assert _everything(study) == ["t.bin", "trials.parquet"]


def test_a_write_lands_under_a_temporary_name_before_it_is_published(study, monkeypatch):
    study.write_bytes("t.bin", b"old")
    seen: dict[str, object] = {}
    publish = study._publish

    def observe(tmp: str, final: str) -> None:
        seen["final_then"] = study.read_bytes("t.bin")
        seen["files_then"] = _everything(study)
        seen["listed_then"] = study.list()
        publish(tmp, final)

    monkeypatch.setattr(study, "_publish", observe)
    study.write_bytes("t.bin", b"new")
    # the whole new content sat under another name while the old file was still whole
    assert seen["final_then"] == b"old"
    temporaries = [f for f in seen["files_then"] if f != "t.bin"]
    assert len(temporaries) == 1 and temporaries[0].startswith(".tmp-")
    assert seen["listed_then"] == ["t.bin"]  # temporaries are never listed
    assert study.read_bytes("t.bin") == b"new"
    assert _everything(study) == ["t.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(study, monkeypatch):
    study.write_bytes("t.bin", b"old")

    def fail(tmp: str, final: str) -> None:
        raise OSError("connection reset")

    monkeypatch.setattr(study, "_publish", fail)
    with pytest.raises(OSError, match="connection reset"):
        study.write_bytes("t.bin", b"new")
    assert study.read_bytes("t.bin") == b"old"
    assert _everything(study) == ["t.bin"]


def test_a_streamed_write_that_fails_midway_keeps_the_old_file(study):
    study.write_bytes("t.bin", b"old")

    def write(stream) -> None:
        stream.write(b"half of the n")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        study.write_streamed("t.bin", write)
    assert study.read_bytes("t.bin") == b"old"
    assert _everything(study) == ["t.bin"]
    study.write_streamed("t.bin", lambda stream: [stream.write(p) for p in (b"ne", b"w")])
    assert study.read_bytes("t.bin") == b"new"


def test_a_concurrent_reader_sees_only_whole_files(study):
    versions = [b"a" * 200_000, b"b" * 300_000]
    study.write_bytes("t.bin", versions[0])
    done = threading.Event()

    def rewrite() -> None:
        for i in range(12):
            study.write_bytes("t.bin", versions[i % 2])
        done.set()

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = []
    while not done.is_set():
        reads.append(study.read_bytes("t.bin"))
    writer.join()
    assert reads and all(data in versions for data in reads)


def test_list_and_delete(study):
    for rel in ("a.txt", "sub/b.txt", "sub/deeper/c.txt"):
        study.write_text(rel, rel)
    assert study.list() == ["a.txt"]
    assert study.list(recursive=True) == ["a.txt", "sub/b.txt", "sub/deeper/c.txt"]
    assert study.list("sub") == ["b.txt"]
    assert study.list("sub", recursive=True) == ["b.txt", "deeper/c.txt"]
    assert study.list("a.txt") == [] and study.list("nope") == []

    study.delete("sub/deeper/c.txt")
    assert study.list("sub", recursive=True) == ["b.txt"]
    study.delete("sub")
    assert not study.exists("sub") and not study.exists("sub/b.txt")
    assert study.list(recursive=True) == ["a.txt"]
    study.delete("sub")  # already gone: fine


def test_upload_and_download_a_tree_and_a_file(study, tmp_path):
    tree = tmp_path / "events"
    (tree / "trial_a").mkdir(parents=True)
    (tree / "trial_a" / "events.out").write_bytes(b"\x01" * 1000)
    (tree / "top.json").write_text("{}")
    study.upload(tree, "tensorboard")
    assert study.list("tensorboard", recursive=True) == ["top.json", "trial_a/events.out"]
    study.upload(tree / "top.json", "copies/one.json")
    assert study.read_text("copies/one.json") == "{}"

    back = tmp_path / "back"
    study.download("tensorboard", back)
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file()) == [
        "top.json",
        "trial_a/events.out",
    ]
    assert (back / "trial_a" / "events.out").read_bytes() == b"\x01" * 1000
    study.download("copies/one.json", tmp_path / "one" / "copy.json")
    assert (tmp_path / "one" / "copy.json").read_text() == "{}"
    assert not any(".tmp-" in f for f in _everything(study))
    with pytest.raises(FileNotFoundError):
        study.upload(tmp_path / "absent", "x")


def test_create_exclusive(study):
    assert study.create_exclusive("lock.json", b"first")
    assert not study.create_exclusive("lock.json", b"second")
    assert study.read_bytes("lock.json") == b"first"
    study.delete("lock.json")
    assert study.create_exclusive("lock.json", b"third")


def test_create_exclusive_has_one_winner_among_racing_local_callers(tmp_path):
    study = Storage(tmp_path / "study")
    start = threading.Barrier(8)
    wins: list[int] = []
    lost: list[int] = []
    seen: list[str] = []

    def claim(i: int) -> None:
        start.wait()
        won = study.create_exclusive("lock.json", f"caller {i}".encode())
        # a loser reads the winner's whole content, never an empty file
        (wins if won else lost).append(i)
        seen.append(study.read_text("lock.json"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and len(lost) == 7
    assert seen == [f"caller {wins[0]}"] * 8
    assert _everything(study) == ["lock.json"]  # no temporary left behind


def test_child_shares_the_files(study):
    study.child("sub").write_text("x.txt", "hi")
    assert study.read_text("sub/x.txt") == "hi"
    assert study.child("sub").uri == study.join("sub")
    assert study.child("sub").list() == ["x.txt"]


def test_pickles_by_uri(study):
    study.write_text("a.txt", "hi")
    copy = pickle.loads(pickle.dumps(study))
    assert copy.uri == study.uri and copy.read_text("a.txt") == "hi"


@pytest.mark.parametrize("rel", ["../outside", "/etc/passwd", "a/../../b"])
def test_paths_must_stay_inside_the_study(study, rel):
    with pytest.raises(ValueError, match="inside the study"):
        study.read_bytes(rel)


def test_user_errors_name_the_location(s3_server, tmp_path):
    with pytest.raises(StorageError, match="nosuchfs://x/y"):
        Storage("nosuchfs://x/y")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        Storage("s3://no-such-bucket/study").check()
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="not a directory"):
        Storage(tmp_path / "file").check()
    Storage(f"s3://{s3_server.bucket}/fresh").check()
    Storage(tmp_path / "fresh").check()
    assert issubclass(StorageError, ValueError)


def test_the_endpoint_can_come_from_the_uri(s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host = s3_server.endpoint.removeprefix("http://")
    study = Storage(f"s3://{s3_server.bucket}/q?endpoint_override={host}&scheme=http")
    study.write_text("a.txt", "via the query")
    assert Storage(study.uri).read_text("a.txt") == "via the query"
    assert study.list() == ["a.txt"]
