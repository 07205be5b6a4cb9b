"""Atomic file writes: write beside the target, then rename, so no reader ever sees half a file.

Every output of ecad-ray (images, tables, shards, schedules, weights) goes through here; an
interrupted run leaves only complete files plus hidden `.tmp` leftovers that readers ignore.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success, delete it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_leftover(path: Path) -> bool:
    """A temporary file of `atomic_path` (`.<name>.<8 hex>.tmp`), left by a writer that was killed."""
    name = path.name
    return name.startswith(".") and name.endswith(".tmp") and len(name.split(".")[-2]) == 8


def remove_leftovers(folder: str | os.PathLike) -> int:
    """Delete the temporary files killed writers left under `folder`; how many there were.

    Only safe while no other process can be writing there (a run holds its folder's lock)."""
    found = [p for p in Path(folder).rglob(".*.tmp") if p.is_file() and is_leftover(p)]
    for p in found:
        p.unlink(missing_ok=True)
    return len(found)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_table_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write a Parquet table to `path` atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)
