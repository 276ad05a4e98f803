"""File helpers: checksums and atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["check_input_file", "file_record", "fsync_dir", "sha256_file"]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_input_file(path: Path, what: str, key: str) -> Path:
    """An input file that exists, is a file and is not empty; else a typed error.

    ``what`` names the input ("register file"), ``key`` the pipeline key to fix.
    """
    from mfa.errors import InputDataError, InputNotFoundError

    path = Path(path)
    if path.is_dir():
        raise InputNotFoundError(f"{path}: is a folder, not a {what}; give a file in {key}")
    if not path.is_file():
        raise InputNotFoundError(f"{path}: {what} not found; fix {key}")
    if path.stat().st_size == 0:
        raise InputDataError(
            f"{path}: empty file (0 bytes), not a {what}; a download or copy failed? "
            f"replace it, or fix {key}"
        )
    return path


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
