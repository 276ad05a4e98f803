"""File helpers: checksums, atomic writes and what an input path is before it is opened."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "MAX_WHOLE_FILE_MB",
    "check_input_file",
    "check_whole_size",
    "exchange_dirs",
    "file_record",
    "fsync_dir",
    "missing_columns",
    "path_problem",
    "read_together",
    "replaced_atomically",
    "sha256_file",
]

#: The default of ``[compute] max_whole_file_mb`` (MB, 10⁶ bytes): a file read whole takes
#: about five times its size in memory as pandas text columns (a 3 GB file of NUL bytes
#: named .csv took more than 12 GB); larger registers belong in GeoParquet, which is read
#: in batches. A setting, not a number from literature.
MAX_WHOLE_FILE_MB = 1024.0

#: Sidecar files GDAL reads together with a Shapefile (they change what is read).
SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")


def missing_columns(columns: object, required: tuple[str, ...]) -> tuple[list[str], str]:
    """The ``required`` column names not in ``columns``, and for each a similar name that
    is there (a hint such as ``'byg021Anvendelse' for 'byg021BygningensAnvendelse'?``;
    empty when none is similar)."""
    import difflib

    present = [str(c) for c in columns if c != "geometry"]  # type: ignore[attr-defined]
    missing = [c for c in required if c not in present]
    close = {m: difflib.get_close_matches(m, present, n=1, cutoff=0.7) for m in missing}
    return missing, "; ".join(f"'{c[0]}' for '{m}'?" for m, c in close.items() if c)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def path_problem(path: Path) -> str | None:
    """Why ``path`` is not a regular file mfa can open, as a phrase; None when it is one.

    FIFOs, devices and sockets are refused (reading one may block for ever or never end);
    a symlink loop, a too-long name or a folder are named as such, not as "missing".
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a part of the path is a file, not a folder)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (a link that points back to itself)"
        if exc.errno == errno.ENAMETOOLONG:
            longest = max((len(part) for part in Path(path).parts), default=0)
            return (
                f"has a name too long for the file system ({longest} characters in one part, "
                f"{len(str(path))} in all)"
            )
        return f"cannot be looked at ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(st.st_mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(st.st_mode):
        return "is a socket, not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    return None


def check_input_file(path: Path, what: str, key: str) -> Path:
    """An input file that exists, is a regular file and is not empty; else a typed error.

    ``what`` names the input ("register file"), ``key`` the pipeline key to fix.
    """
    from mfa.errors import InputDataError, InputNotFoundError

    path = Path(path)
    problem = path_problem(path)
    if problem == "is a folder, not a file":
        raise InputNotFoundError(f"{path}: is a folder, not a {what}; give a file in {key}")
    if problem == "does not exist":
        raise InputNotFoundError(f"{path}: {what} not found; fix {key}")
    if problem is not None:
        raise InputDataError(f"{path}: {problem}; give a regular {what} in {key}")
    if path.stat().st_size == 0:
        raise InputDataError(
            f"{path}: empty file (0 bytes), not a {what}; a download or copy failed? "
            f"replace it, or fix {key}"
        )
    return path


def read_together(path: Path) -> list[Path]:
    """The files a reader of ``path`` reads: the file, a Shapefile's sidecars, the tiles
    a raster VRT names (:func:`mfa.io.safeopen.vrt_sources`)."""
    path = Path(path)
    if path.suffix.lower() == ".vrt":
        from mfa.io.safeopen import vrt_sources

        return [path, *vrt_sources(path)]
    if path.suffix.lower() != ".shp":
        return [path]
    extra = [path.with_suffix(s) for s in SHAPEFILE_SIDECARS]
    extra += [path.with_suffix(s.upper()) for s in SHAPEFILE_SIDECARS]
    return [path, *sorted({p for p in extra if p.is_file()})]


def file_record(path: Path) -> dict[str, object]:
    """Path, size (bytes) and sha256 of an input file, for the run manifest; the files
    read with it (a Shapefile's sidecars, a VRT's tiles) are listed under ``sidecars``."""
    path = Path(path)
    record: dict[str, object] = {
        "path": str(path),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    sidecars = read_together(path)[1:]
    if sidecars:
        record["sidecars"] = [
            {"path": str(s), "bytes": s.stat().st_size, "sha256": sha256_file(s)} for s in sidecars
        ]
    return record


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (``.<name>.tmp``) to write in the block: renamed
    onto ``path`` when the block ends, removed when it fails (a full disk, Ctrl-C), so
    ``path`` is either its old self or complete, never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk (after creating or renaming files in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exchange_dirs(new: Path, old: Path) -> bool:
    """Swap the folders ``new`` and ``old`` in one step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``): ``old``'s path then holds what was at ``new`` and the other way
    round, and no moment sees neither. False (nothing changed) when the system or the
    file system cannot exchange; the caller then renames twice."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 (macOS, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    done = renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(old), rename_exchange)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(old))


def check_whole_size(path: Path, limit_mb: float, setting: str, role: str) -> None:
    """Refuse a file mfa would read whole that is larger than ``limit_mb`` (MB, 10⁶
    bytes): one line naming the file, its size and the ``setting`` that bounds it."""
    from mfa.errors import InputDataError

    size = Path(path).stat().st_size
    if size > limit_mb * 1e6:
        hint = (
            "convert it to GeoParquet (read in batches) or raise" if role == "register" else "raise"
        )
        raise InputDataError(
            f"{path}: {size / 1e6:,.1f} MB, more than {setting} = {limit_mb:g} MB for a "
            f"{role} file that mfa reads whole (about five times its size in memory); "
            f"{hint} the limit if the machine has the memory"
        )
