"""``mfa synth`` writes a city whole or not at all, and never replaces a folder it did not
write (issue 19): killed while writing (SIGKILL at the ``synth:written`` failpoint, a real
process), the target is as it was; a foreign folder is one line and stays byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mfa.errors import InputDataError
from mfa.synth import MARKER, write_synthetic_city
from tests.conftest import CONFIG, ROOT, SAMPLE

ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
LIKE = SAMPLE / "bbr_bygning_2020.parquet"


def _synth(
    target: Path, seed: int = 1, failpoint: str | None = None
) -> subprocess.CompletedProcess:
    env = {**ENV, "MFA_FAILPOINT": failpoint} if failpoint else ENV
    args = ["synth", "-n", "300", "--seed", str(seed), "-o", str(target)]
    return subprocess.run(
        [sys.executable, "-m", "mfa.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _digest(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "folder"
        for p in sorted(folder.rglob("*"))
    }


def _beside(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir())


def test_a_killed_synth_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "city"
    (tmp_path / "notes.txt").write_text("mine")
    done = _synth(target, failpoint="synth:written")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not target.exists()  # no half-written city at the target
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".city.synth-")]
    assert (left / "register.parquet").is_file() and not (left / "pipeline.toml").exists()

    done = _synth(target)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _beside(target) == ["city", "notes.txt"]  # the leftover removed, notes kept
    before = _digest(target)
    assert json.loads((target / MARKER).read_text())["seed"] == 1

    done = _synth(target, seed=2, failpoint="synth:written")  # killed replacing a city
    assert done.returncode == -signal.SIGKILL
    assert _digest(target) == before  # the previous city, byte for byte
    done = _synth(target, seed=2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((target / MARKER).read_text())["seed"] == 2
    assert _digest(target) != before and _beside(target) == ["city", "notes.txt"]


def test_a_foreign_folder_is_one_line_and_untouched(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.docx").write_bytes(b"years of work")
    (target / "register.parquet").write_bytes(b"not mfa's")
    before = _digest(target)
    done = _synth(target)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert str(target) in line and "not empty" in line and "thesis.docx" in line
    assert "choose another --output" in line
    assert _digest(target) == before and _beside(target) == ["mine"]


def test_what_may_be_replaced(tmp_path: Path) -> None:
    """An empty folder is filled; a city of mfa synth is replaced; a city with a run's
    outputs in it, a file, or a folder holding the marker among foreign files is not."""
    empty = tmp_path / "empty"
    empty.mkdir()
    write_synthetic_city(200, 1, empty, LIKE, CONFIG)
    assert {p.name for p in empty.iterdir()} == {
        MARKER,
        "register.parquet",
        "districts.parquet",
        "pipeline.toml",
    }
    write_synthetic_city(200, 5, empty, LIKE, CONFIG)
    assert json.loads((empty / MARKER).read_text())["seed"] == 5
    mask = os.umask(0)
    os.umask(mask)
    assert empty.stat().st_mode & 0o777 == 0o777 & ~mask  # as mkdir makes it

    (empty / "outputs").mkdir()  # mfa run of the city's pipeline writes here
    before = _digest(empty)
    with pytest.raises(InputDataError, match="with other files in it \\(outputs\\)"):
        write_synthetic_city(200, 6, empty, LIKE, CONFIG)
    assert _digest(empty) == before
    a_file = tmp_path / "city.txt"
    a_file.write_text("x")
    with pytest.raises(InputDataError, match="is a file"):
        write_synthetic_city(200, 6, a_file, LIKE, CONFIG)
    assert a_file.read_text() == "x"
    link = tmp_path / "link"
    link.symlink_to(empty)
    with pytest.raises(InputDataError, match="symbolic link"):
        write_synthetic_city(200, 6, link, LIKE, CONFIG)
    assert _digest(empty) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city.txt", "empty", "link"]
