"""The HTML query map, rendered for real in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def map_file(tmp_path_factory, dk_sample_run: Path) -> Path:
    tmp = tmp_path_factory.mktemp("map")
    run = dk_sample_run
    out = tmp / "query.html"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "query",
            str(run),
            "--around",
            "643786,6150882",
            "--radius",
            "3000",
            "--years",
            "2026-2035",
            "--map",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def test_map_is_self_contained(map_file: Path) -> None:
    text = map_file.read_text()
    assert "<svg" in text and 'id="legend"' in text and 'id="summary"' in text
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    assert "<script" not in text  # opens offline, nothing to load
    assert text.count("<path") + text.count("<circle") > 50  # the area and the buildings


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_map_renders_in_headless_chromium(map_file: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "map.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,900",
            f"--screenshot={shot}",
            map_file.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[0] >= 800 and img.shape[1] >= 1300
    colours = {tuple(c) for c in img.reshape(-1, 3)[::97]}
    assert len(colours) > 20  # not blank: map, legend and table drawn
    # the palette's darkest class (#bd0026) and the area outline (#2c6fbb) are visible
    near = lambda rgb: (np.abs(img - np.array(rgb)).sum(axis=2) < 40).sum()  # noqa: E731
    assert near((0xBD, 0x00, 0x26)) > 10 and near((0x2C, 0x6F, 0xBB)) > 10
