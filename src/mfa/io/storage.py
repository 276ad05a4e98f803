"""What a full, over-quota or read-only file system did to a write: one classification
for every command (``mfa run``, ``query``, ``match``, ``pull``; issue 19).

Libraries report a full disk in their own words: Python and pyarrow give ``errno 28``,
SQLite (GeoPackage, Prefect's database) "database or disk is full", GDAL's GeoPackage
writer sometimes only what failed next ("no such table: gpkg_contents").
:func:`storage_error` reads the error and its causes (errno, else those words) and, when
they do not say, the file system itself (``statvfs``): read-only, or not one free block
left. It turns them into one :class:`~mfa.errors.OutputStorageError`: which folder, what
is wrong with its file system, what happened to the results and what to do. There is no
threshold of "nearly full": a vague failure on a disk with any free block stays what it
is (a failed write fills the disk to its last block before it fails).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from mfa.errors import MfaError, OutputStorageError

__all__ = [
    "folder_bytes",
    "short_of_space",
    "storage_errno",
    "storage_error",
    "storage_message",
]

#: What each errno means for the file system, as a phrase.
_STATES = {
    errno.ENOSPC: "full (no space left on the device)",
    errno.EDQUOT: "over your disk quota",
    errno.EROFS: "read-only",
}

#: How the libraries mfa writes through say it, when they give no errno (lower case).
_TEXTS = (
    ("no space left on device", errno.ENOSPC),
    ("errno 28", errno.ENOSPC),  # pyarrow: "[errno 28] No space left on device"
    ("database or disk is full", errno.ENOSPC),  # SQLite: GeoPackage, Prefect's database
    ("disk quota exceeded", errno.EDQUOT),
    ("read-only file system", errno.EROFS),
    ("readonly database", errno.EROFS),  # SQLite: "attempt to write a readonly database"
)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it was raised from or while handling, without cycles."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest existing parent (statvfs needs a path that exists)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def storage_errno(exc: BaseException, folder: Path | None = None) -> int | None:
    """ENOSPC, EDQUOT or EROFS when ``exc`` (or an error in its chain) comes from a full,
    over-quota or read-only file system; else None.

    When the errors do not say and ``folder`` is given, the file system holding it is
    asked: EROFS when it is mounted read-only, ENOSPC when not one block is free for its
    user (:func:`short_of_space` with 1 byte). Call it before the failed writer's files
    are removed (they are what filled the disk). mfa's own errors
    (:class:`~mfa.errors.MfaError`) and interrupts are never put down to the disk.
    """
    if not isinstance(exc, Exception) or isinstance(exc, MfaError):
        return None
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _STATES:
            return e.errno
        text = str(e).lower()
        for phrase, code in _TEXTS:
            if phrase in text:
                return code
    return None if folder is None else short_of_space(folder, 1)


def short_of_space(folder: Path, need: int) -> int | None:
    """EROFS when the file system holding ``folder`` is read-only, ENOSPC when it has
    fewer than ``need`` bytes free (for its user); else None (also when it cannot be
    asked)."""
    try:
        st = os.statvfs(_existing(folder))
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if st.f_bavail * st.f_frsize < need:
        return errno.ENOSPC
    return None


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (0 when it cannot be read)."""
    try:
        return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    except OSError:
        return 0


def storage_error(
    exc: BaseException,
    folder: Path,
    *,
    outcome: str,
    option: str,
    needed: str = "",
) -> OutputStorageError | None:
    """The one-line error for ``exc`` when a full, over-quota or read-only file system
    caused it (:func:`storage_errno`), else None.

    ``folder`` is where the command writes (named first in the message), ``outcome``
    what happened to the results ("nothing was published ..."), ``option`` the option or
    key that chooses another place, ``needed`` an optional size hint for a full disk
    ("the latest run takes 11.2 MB").
    """
    code = storage_errno(exc, folder)
    return None if code is None else storage_message(code, folder, outcome, option, needed)


def storage_message(
    code: int, folder: Path, outcome: str, option: str, needed: str = ""
) -> OutputStorageError:
    """The one-line error for ``code`` (ENOSPC, EDQUOT, EROFS) at ``folder``, as
    :func:`storage_error` words it."""
    if code == errno.EROFS:
        fix = f"remount it read-write or choose another {option}"
    elif code == errno.EDQUOT:
        fix = f"free space within your quota{needed and f' ({needed})'} or choose another {option}"
    else:
        fix = f"free space there{needed and f' ({needed})'} or choose another {option}"
    error = OutputStorageError(
        f"{folder}: cannot write: its file system is {_STATES[code]}; {outcome}: "
        f"{fix}, then run again"
    )
    error.errno = code
    return error
