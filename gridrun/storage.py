"""A study directory behind one small interface: a local path or a URI that
``pyarrow.fs.FileSystem.from_uri`` opens (``s3://bucket/prefix``, ``gs://...``).

Paths inside a study are relative POSIX strings (``"checkpoints/a.pt"``). Every write
is atomic: a reader (another process, a crashed writer's successor) sees the old file
or the new one, never half of either.

S3 credentials and endpoint come from the usual places, so a plain ``s3://bucket/prefix``
works on every Ray node that has them: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
(or an instance profile), ``AWS_REGION``, and ``AWS_ENDPOINT_URL`` for an S3-compatible
server (MinIO, moto). A URI may also carry pyarrow's options as a query, e.g.
``s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http``; the query is kept
on every derived URI (`join`, `child`), which Ray's ``storage_path`` accepts too.

`read_tables` reads a study's two tables as a reader sees them while it runs: each
table with the parts appended since it was last compacted (`gridrun.layout`).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gridrun.layout import (
    CURVE_COLUMNS,
    CURVES_FILE,
    CURVES_PARTS_DIR,
    TRIAL_COLUMNS,
    TRIAL_KEY,
    TRIALS_FILE,
    TRIALS_PARTS_DIR,
    parse_part_name,
)

__all__ = [
    "Storage",
    "StorageError",
    "TableReadError",
    "combine_parts",
    "combine_tables",
    "latest_rows",
    "owned_rows",
    "list_parts",
    "read_arrow",
    "read_arrow_or_none",
    "read_tables",
    "table_frame",
    "write_arrow",
]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# temporary files and keys start with this and are never listed
_TMP_PREFIX = ".tmp-"
# object stores need no directories; creating them there only adds marker objects
_NO_DIRS = ("s3", "gcs")
_READ_ATTEMPTS = 5


class StorageError(ValueError):
    """A study location that cannot be used as given (the message names it)."""


class Storage:
    """A study directory: a local path (made absolute) or a filesystem URI."""

    def __init__(self, location: str | os.PathLike[str]):
        text = os.fspath(location)
        self._query = ""
        if _URI.match(text) and not text.startswith("file://"):
            base, _, self._query = text.partition("?")
            self._base = base.rstrip("/") if not base.endswith("://") else base
            self._fs, self._root = _open(text)
            self._local: Path | None = None
        else:
            if text.startswith("file://"):
                text = _open(text)[1]
            self._local = Path(os.path.abspath(os.path.expanduser(text)))
            self._base = str(self._local)
            self._fs, self._root = pafs.LocalFileSystem(), self._local.as_posix()

    # -- naming -------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The absolute local path or the URI: what Ray's ``storage_path`` takes."""
        return self.join("")

    @property
    def is_local(self) -> bool:
        return self._local is not None

    def local_path(self, rel: str = "") -> Path | None:
        """The path on this machine, or None for object storage."""
        if self._local is None:
            return None
        rel = _clean(rel)
        return self._local / rel if rel else self._local

    def join(self, rel: str) -> str:
        """The URI (or absolute path) of `rel`, query kept: ``s3://b/p/rel?query``."""
        rel = _clean(rel)
        joined = posixpath.join(self._base, rel) if rel else self._base
        return f"{joined}?{self._query}" if self._query else joined

    def child(self, rel: str) -> Storage:
        """The storage rooted at `rel`, sharing this one's filesystem connection."""
        rel = _clean(rel)
        child = object.__new__(Storage)
        child._fs, child._query = self._fs, self._query
        child._root = self._path(rel)
        child._local = self.local_path(rel)
        child._base = self.join(rel).partition("?")[0]
        return child

    def check(self) -> None:
        """Raise StorageError if the location cannot hold a study: a local path that is
        a file, a bucket that does not exist, an endpoint or credentials that fail."""
        try:
            if self._local is not None:
                if self._local.exists() and not self._local.is_dir():
                    raise StorageError(f"{self}: exists and is not a directory")
                return
            bucket = self._root.split("/", 1)[0]
            if self._fs.type_name in _NO_DIRS:
                if not bucket:
                    raise StorageError(f"{self}: names no bucket")
                if self._fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise StorageError(f"{self}: bucket {bucket!r} does not exist")
            if self._fs.get_file_info(self._root).type == pafs.FileType.File:
                raise StorageError(f"{self}: is a file, not a directory")
        except OSError as exc:
            raise StorageError(f"{self}: cannot be reached ({_first_line(exc)})") from None

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    def __reduce__(self):
        # note: Ray pickles this into workers; each reopens the URI with its own
        # credentials rather than carrying the driver's connection
        return (Storage, (self.uri,))

    # -- reading ------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """Whether `rel` is a file or a directory (for object storage: a prefix with
        keys under it)."""
        return self._info(rel).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        """The file's contents, all of one version; FileNotFoundError if there is none."""
        path = self._path(rel)
        for _ in range(_READ_ATTEMPTS):
            try:
                # note: a random-access file reads in one request; a stream would read
                # in ranges, and a rewrite between two ranges would splice two versions
                with self._fs.open_input_file(path) as handle:
                    size, data = handle.size(), handle.read()
            except OSError:
                if self._fs.get_file_info(path).type != pafs.FileType.File:
                    raise FileNotFoundError(f"{self.join(rel)}: no such file") from None
                if self._local is not None:
                    raise
                continue  # replaced by a smaller version between opening and reading
            # an object replaced by a larger one between opening and reading was read
            # only up to the old size: the size now tells
            if self._local is not None or len(data) == size == self._fs.get_file_info(path).size:
                return data
        raise OSError(f"{self.join(rel)}: rewritten during each of {_READ_ATTEMPTS} reads")

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def read_parquet(self, rel: str) -> pd.DataFrame:
        """The table, or an empty DataFrame if the file does not exist."""
        try:
            data = self.read_bytes(rel)
        except FileNotFoundError:
            return pd.DataFrame()
        return pd.read_parquet(io.BytesIO(data))

    def read_npz(self, rel: str) -> dict[str, np.ndarray]:
        """The arrays of an .npz file (FileNotFoundError if missing)."""
        with np.load(io.BytesIO(self.read_bytes(rel))) as data:
            return {name: data[name] for name in data.files}

    def list(self, rel: str = "", recursive: bool = False) -> list[str]:
        """Files under directory `rel`, sorted, as paths relative to `rel` (so
        ``read_bytes(f"{rel}/{name}")`` reads one); [] if `rel` is no directory.
        Without `recursive`, only files directly in `rel`."""
        path = self._path(rel)
        if self._fs.get_file_info(path).type != pafs.FileType.Directory:
            return []
        selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
        found = []
        for info in self._fs.get_file_info(selector):
            name = info.path[len(path.rstrip("/")) + 1 :]
            if info.type == pafs.FileType.File and not _is_tmp(name):
                found.append(name)
        return sorted(found)

    def download(self, rel: str, local: Path) -> None:
        """Copy file `rel` to the file `local`, or directory `rel` into directory `local`."""
        local = Path(local)
        kind = self._info(rel).type
        if kind == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{self.join(rel)}: no such file or directory")
        if kind == pafs.FileType.File:
            pairs = [(self._path(rel), local)]
        else:
            pairs = [(self._path(f"{rel}/{name}"), local / name) for name in self.list(rel, True)]
            local.mkdir(parents=True, exist_ok=True)
        for source, target in pairs:
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(
                source, str(target),
                source_filesystem=self._fs, destination_filesystem=pafs.LocalFileSystem(),
            )  # fmt: skip

    # -- writing ------------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write atomically: the data goes to a temporary name beside `rel` first."""
        self.write_streamed(rel, lambda stream: stream.write(data))

    def write_streamed(self, rel: str, write: Callable[[pa.NativeFile], object]) -> None:
        """`write_bytes` for content made a piece at a time: `write(stream)` writes it to
        the temporary file, so none of it has to be held whole in memory."""

        def fill(tmp: str) -> None:
            with self._fs.open_output_stream(tmp) as stream:
                write(stream)

        self._atomic(rel, fill)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def write_parquet(self, rel: str, frame: pd.DataFrame) -> None:
        """Write the table (without its index) atomically."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self.write_bytes(rel, buffer.getvalue())

    def write_npz(self, rel: str, **arrays: np.ndarray) -> None:
        """Write arrays as a compressed .npz file atomically."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        self.write_bytes(rel, buffer.getvalue())

    def upload(self, local: Path, rel: str) -> None:
        """Copy the file `local` to `rel`, or the directory `local` into directory `rel`;
        each file is written atomically (the tree as a whole is not)."""
        local = Path(local)
        if local.is_dir():
            files = sorted(p for p in local.rglob("*") if p.is_file())
            pairs = [(p, posixpath.join(rel, p.relative_to(local).as_posix())) for p in files]
        elif local.is_file():
            pairs = [(local, rel)]
        else:
            raise FileNotFoundError(f"{local}: no such file or directory")
        for source, target in pairs:
            self._atomic(
                target,
                lambda tmp, source=source: pafs.copy_files(
                    str(source), tmp,
                    source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self._fs,
                ),
            )  # fmt: skip

    def delete(self, rel: str) -> None:
        """Delete the file or the directory tree `rel`; a missing one is fine."""
        path = self._path(rel)
        kind = self._fs.get_file_info(path).type
        try:
            if kind == pafs.FileType.File:
                self._fs.delete_file(path)
            elif kind == pafs.FileType.Directory:
                self._fs.delete_dir(path)
        except FileNotFoundError:
            pass  # deleted by someone else meanwhile

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create `rel` holding `data` unless it exists; True if this call created it.

        Local: the data is written to a temporary file that is then hard-linked to `rel`
        (``link`` fails if `rel` exists), so exactly one of any number of racing callers
        wins and no reader ever sees the file without its content.
        Object storage has no such primitive here, so this is best effort: check, write,
        read back. Two callers that both check before either writes both write; the later
        write wins and the earlier caller reads the other's data back and returns False,
        unless both read back before the later write lands (a window of one request).
        Make `data` unique per caller (host, pid, a random token) so the read-back can
        tell callers apart."""
        path = self._path(rel)
        if self._local is None:
            if self.exists(rel):
                return False
            self.write_bytes(rel, data)
            return self.read_bytes(rel) == data
        self._make_parent(path)
        tmp = _temp_for(path)
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return True

    # -- internals ----------------------------------------------------------------------

    def _path(self, rel: str) -> str:
        rel = _clean(rel)
        return f"{self._root.rstrip('/')}/{rel}" if rel else self._root

    def _info(self, rel: str) -> pafs.FileInfo:
        return self._fs.get_file_info(self._path(rel))

    def _make_parent(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent and self._fs.type_name not in _NO_DIRS:
            self._fs.create_dir(parent, recursive=True)

    def _atomic(self, rel: str, fill: Callable[[str], None]) -> None:
        """fill(tmp) writes the content at a temporary path beside `rel`; then it is
        published under `rel` and the temporary removed, whatever fails."""
        final = self._path(rel)
        if not _clean(rel):
            raise ValueError("a file needs a path inside the study, not the study itself")
        tmp = _temp_for(final)
        self._make_parent(final)
        try:
            fill(tmp)
            self._publish(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                if self._fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                    self._fs.delete_file(tmp)
            raise
        if self._local is None:
            self._fs.delete_file(tmp)

    def _publish(self, tmp: str, final: str) -> None:
        if self._local is not None:
            os.replace(tmp, final)
        else:
            # note: a server-side copy makes the object appear whole; the upload itself
            # never targets the final key, so a writer that dies mid-upload (pyarrow
            # completes a multipart upload when its stream is closed, even on an error)
            # cannot leave a truncated file under it
            self._fs.copy_file(tmp, final)


class TableReadError(ValueError):
    """A table or part that exists but cannot be read (the message names it)."""


# a table's pieces in the order they apply: an Arrow table (or None) per source
Sources = Sequence[pa.Table | None]


def list_parts(study: Storage, parts_dir: str) -> list[str]:
    """The whole parts in `parts_dir`, as paths in the study, in the order they apply."""
    named = [(parse_part_name(n), n) for n in study.list(parts_dir)]
    return [f"{parts_dir}/{n}" for key, n in sorted((k, n) for k, n in named if k is not None)]


def read_arrow(study: Storage, rel: str, columns: list[str] | None = None) -> pa.Table:
    """The Parquet file `rel` (only `columns`, if given) as an Arrow table without
    pandas' metadata (FileNotFoundError if it is gone)."""
    data = study.read_bytes(rel)
    try:
        return pq.read_table(io.BytesIO(data), columns=columns).replace_schema_metadata(None)
    except Exception as exc:  # noqa: BLE001 - any reader error means the same to the user
        raise TableReadError(f"cannot read {rel}: {exc}") from exc


def latest_rows(trials: Sources) -> tuple[pa.Table | None, pd.Series | None]:
    """Trial rows of sources applied in order (the latest row of a trial wins; column
    types promoted across sources), and the source of each trial's row, by TRIAL_KEY."""
    key = list(TRIAL_KEY)
    table, source = _concat(trials)
    if table is None:
        return None, None
    keys = table.select(key).to_pandas()
    keep = ~keys.duplicated(key, keep="last").to_numpy()
    return table.filter(pa.array(keep)), pd.Series(source[keep], _index(keys[keep]))


def owned_rows(curves: pa.Table, source: int, owner: pd.Series | None) -> np.ndarray:
    """Which curve rows of `source` belong to their trial's latest row: the curve rows
    written with it (a trial without any row keeps only source 0's, the compacted table)."""
    wanted = np.zeros(curves.num_rows)
    if owner is not None and curves.num_rows:
        found = owner.reindex(_index(curves.select(list(TRIAL_KEY)).to_pandas()))
        wanted = found.fillna(0).to_numpy()
    return wanted == source


def combine_parts(trials: Sources, curves: Sources) -> tuple[pa.Table | None, pa.Table | None]:
    """Sources applied in order, sources[i] of both tables written together: a trial's
    latest row wins, with the curve rows written with it (`owned_rows`). None for a
    table without any source."""
    trial_table, owner = latest_rows(trials)
    curve_table, curve_src = _concat(curves)
    if curve_table is not None and curve_table.num_rows:
        keep = np.zeros(curve_table.num_rows, dtype=bool)
        for i in np.unique(curve_src):
            at = curve_src == i
            keep[at] = owned_rows(curve_table.filter(pa.array(at)), int(i), owner)
        curve_table = curve_table.filter(pa.array(keep))
    return trial_table, curve_table


def combine_tables(
    trials: Sources, curves: Sources
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """`combine_parts` as pandas frames, as pandas would have built them from the rows
    that remain: columns in the tables' order, extras sorted, rows sorted by trial (and
    epoch). An empty curves table where trials has rows and curves none."""
    key = list(TRIAL_KEY)
    trial_table, curve_table = combine_parts(trials, curves)
    curve_frame = table_frame(curve_table, CURVE_COLUMNS, [*key, "epoch"])
    if curve_frame is None and trial_table is not None:
        curve_frame = pd.DataFrame(columns=CURVE_COLUMNS)
    return table_frame(trial_table, TRIAL_COLUMNS, key), curve_frame


def write_arrow(study: Storage, rel: str, table: pa.Table) -> None:
    """Write an Arrow table as Parquet, atomically (its column types kept as they are)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    study.write_bytes(rel, buffer.getvalue())


def read_tables(
    study: Storage, curves: bool = True
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """trials and curves (None unless `curves`) as they stand: the compacted tables with
    the whole parts written since applied (`combine_tables`); a part being written is
    invisible. Without parts, the tables as written. None for a table with neither file
    nor part. Raises TableReadError for a file that cannot be read."""
    for _ in range(_READ_ATTEMPTS):
        # note: parts are listed before the tables are read, trials before curves; a
        # part compacted away meanwhile (its rows are in the table now) means read again
        trial_parts = list_parts(study, TRIALS_PARTS_DIR)
        curve_parts = list_parts(study, CURVES_PARTS_DIR) if curves else []
        try:
            if not trial_parts and not curve_parts:
                frame = _read_frame(study, CURVES_FILE) if curves else None
                return _read_frame(study, TRIALS_FILE), frame
            # note: sources[i] of both tables are the parts of one name, written together
            names = sorted({p.rsplit("/", 1)[-1] for p in trial_parts + curve_parts},
                           key=parse_part_name)  # fmt: skip
            trials = [read_arrow_or_none(study, TRIALS_FILE)]
            trials += [_part(study, TRIALS_PARTS_DIR, n, trial_parts) for n in names]
            if not curves:
                return combine_tables(trials, [])[0], None
            curve_tables = [read_arrow_or_none(study, CURVES_FILE)]
            curve_tables += [_part(study, CURVES_PARTS_DIR, n, curve_parts) for n in names]
            return combine_tables(trials, curve_tables)
        except FileNotFoundError:
            continue
    raise OSError(f"{study}: its tables were compacted during each of {_READ_ATTEMPTS} reads")


def _part(study: Storage, parts_dir: str, name: str, listed: list[str]) -> pa.Table | None:
    rel = f"{parts_dir}/{name}"
    return read_arrow(study, rel) if rel in listed else None


def _read_frame(study: Storage, rel: str) -> pd.DataFrame | None:
    try:
        data = study.read_bytes(rel)
    except FileNotFoundError:
        return None
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any reader error means the same to the user
        raise TableReadError(f"cannot read {rel}: {exc}") from exc


def read_arrow_or_none(study: Storage, rel: str) -> pa.Table | None:
    """`read_arrow`, or None when there is no file `rel`."""
    try:
        return read_arrow(study, rel)
    except FileNotFoundError:
        return None


def _index(keys: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(keys)


def _concat(sources: Sources) -> tuple[pa.Table | None, np.ndarray]:
    """The sources' rows as one table (column types promoted: a part where a column is
    all null takes the others' type) and each row's source index."""
    present = [(i, t) for i, t in enumerate(sources) if t is not None]
    if not present:
        return None, np.zeros(0, dtype=int)
    table = pa.concat_tables([t for _, t in present], promote_options="permissive")
    return table, np.repeat([i for i, _ in present], [t.num_rows for _, t in present])


def table_frame(table: pa.Table | None, leading: list[str], by: list[str] | None):
    """The rows as pandas would hold them had it built the table from the rows."""
    if table is None:
        return None
    # note: a column only superseded rows had is not a column of the rows that remain
    names = table.column_names
    extra = sorted(c for c in names if c not in leading and table[c].null_count < len(table))
    frame = table.select([c for c in leading if c in names] + extra).to_pandas()
    for column in frame.columns:
        values = frame[column]
        # note: pandas builds text with gaps as object, None in the gaps
        if isinstance(values.dtype, pd.StringDtype) and values.isna().any():
            frame[column] = values.astype(object).where(values.notna(), None)
    if by is None or not set(by) <= set(frame.columns):
        return frame
    return frame.sort_values(by, ignore_index=True)


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise StorageError(f"{uri}: cannot be opened as storage ({_first_line(exc)})") from None


def _clean(rel: str) -> str:
    """`rel` normalised; "" for the root. Refuses absolute paths and escapes."""
    if not rel or rel == ".":
        return ""
    norm = posixpath.normpath(rel)
    if rel.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ValueError(f"{rel!r}: not a relative path inside the study")
    return "" if norm == "." else norm


def _temp_for(path: str) -> str:
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f"{_TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def _is_tmp(name: str) -> bool:
    return posixpath.basename(name).startswith(_TMP_PREFIX)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
