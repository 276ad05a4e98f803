"""mfa.io.storage without a full disk: how each library's words for a full, over-quota or
read-only file system are read, through an error's causes, and what is never put down to
the disk. The real full and read-only file systems are in tests/test_full_disk.py (root)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfa.errors import InputDataError, OutputStorageError
from mfa.io.files import replaced_atomically
from mfa.io.storage import storage_errno, storage_error, storage_message

#: What the libraries mfa writes through raised on the tmpfs of tests/test_full_disk.py.
SEEN = [
    (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
    (OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"), 28),
    (RuntimeError("sqlite3_exec(COMMIT) failed: database or disk is full"), errno.ENOSPC),
    (sqlite3.OperationalError("attempt to write a readonly database"), errno.EROFS),
    (OSError(errno.EROFS, "Read-only file system"), errno.EROFS),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
]


@pytest.mark.parametrize(("exc", "code"), SEEN, ids=[str(e)[:30] for e, _ in SEEN])
def test_each_library_s_words_are_read(exc: BaseException, code: int) -> None:
    assert storage_errno(exc) == code


def test_a_cause_says_it_when_the_error_does_not(tmp_path: Path) -> None:
    """rasterio's "Write failed" raised from (or while handling) errno 28."""
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise ValueError("Write failed. See previous exception for details.") from inner
    except ValueError as exc:
        assert storage_errno(exc, tmp_path) == errno.ENOSPC
        error = storage_error(exc, tmp_path, outcome="nothing was written", option="--output")
    assert isinstance(error, OutputStorageError) and error.errno == errno.ENOSPC
    text = str(error)
    assert text.startswith(f"{tmp_path}: cannot write") and "--output" in text
    assert "\n" not in text


@given(st.text(max_size=80))
def test_other_errors_are_not_the_disk(text: str) -> None:
    """An error that names no disk state, on a folder with room, stays what it is; mfa's
    own errors and interrupts never become disk errors, whatever they say."""
    lowered = text.lower()
    words = ("space left", "errno 28", "disk is full", "quota", "read-only", "readonly")
    if not any(w in lowered for w in words):
        assert storage_errno(ValueError(text), Path.cwd()) is None
    assert storage_errno(InputDataError(f"{text} no space left on device")) is None
    assert storage_errno(KeyboardInterrupt()) is None


def test_messages_are_one_line_with_the_fix(tmp_path: Path) -> None:
    for code, words in (
        (errno.ENOSPC, "free space there (the latest run takes 1.0 MB)"),
        (errno.EDQUOT, "free space within your quota"),
        (errno.EROFS, "remount it read-write"),
    ):
        text = str(
            storage_message(code, tmp_path, "nothing changed", "-o", "the latest run takes 1.0 MB")
        )
        assert words in text and "-o, then run again" in text and "\n" not in text


def test_replaced_atomically_leaves_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    target = tmp_path / "answer.csv"
    target.write_text("old")
    with pytest.raises(OSError), replaced_atomically(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with replaced_atomically(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]
