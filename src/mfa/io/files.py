"""File helpers: checksums and atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["file_record", "fsync_dir", "sha256_file"]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> dict[str, object]:
    """Path, size (bytes) and sha256 of an input file, for the run manifest."""
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk (after creating or renaming files in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
