"""File downloads streamed to disk (mfa.pull.download): the size bound, a kill mid-download
resumed with Range (or started again when the file changed or the server ignores Range),
and the leftovers of a killed pull removed; against the loopback stand-in."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mfa.config import load_pipeline
from mfa.errors import PullError
from mfa.pull import pull_pipeline, pulled_sources
from mfa.pull.download import CHECKPOINT
from tests.conftest import ROOT, SAMPLE
from tests.pull_helpers import (
    HTTP_PIPELINE,
    features,
    pipeline_file,
    service,
    snapshot_bytes,
    snapshots_in,
)
from tests.pull_standin import Services

__all__ = ["features", "service"]  # fixtures, imported for pytest

NAME = "bbr_bygning_2020.parquet"  # the URL's file name in HTTP_PIPELINE


@pytest.fixture(scope="module")
def big() -> bytes:
    """About 2.5 checkpoints of real bytes: the sample rasters and files, repeated."""
    parts = [p.read_bytes() for p in sorted(SAMPLE.iterdir()) if p.is_file()]
    blob = b"".join(parts)
    return (blob * (int(2.5 * CHECKPOINT) // len(blob) + 1))[: int(2.5 * CHECKPOINT)]


def _mfa_pull(pipeline: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    env.pop("MFA_FAILPOINT", None)
    if failpoint:
        env["MFA_FAILPOINT"] = failpoint
    return subprocess.run(
        [sys.executable, "-m", "mfa.cli", "pull", str(pipeline), "-o", str(pipeline.parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _work(tmp: Path, pipeline: Path) -> Path:
    (ps,) = pulled_sources(load_pipeline(pipeline))
    return tmp / "cache" / "register" / ".pull" / ps.name


def _ranges() -> list[str | None]:
    return [h.get("Range") for _, h in Services.log]


def _killed_after_first_checkpoint(tmp: Path, base: str) -> Path:
    pipeline = pipeline_file(tmp, base)
    proc = _mfa_pull(pipeline, "pull:download:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    work = _work(tmp, pipeline)
    state = json.loads((work / "file.json").read_text())
    assert state["bytes"] == CHECKPOINT and (work / "file.part").stat().st_size >= CHECKPOINT
    assert snapshots_in(tmp / "cache") == []
    Services.log.clear()
    return pipeline


def test_download_killed_mid_file_resumes_with_range_and_ends_byte_identical(
    tmp_path: Path, service: str, big: bytes
) -> None:
    Services.files[NAME] = big
    pipeline = _killed_after_first_checkpoint(tmp_path, service)
    proc = _mfa_pull(pipeline)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _ranges() == [f"bytes={CHECKPOINT}-"]  # only the rest was asked for
    assert Services.log[0][1]["If-Range"].startswith('"')
    (snap,) = (s for s in snapshots_in(tmp_path / "cache") if s.suffix == ".parquet")
    assert snap.read_bytes() == big
    sidecar = json.loads(snap.with_name(snap.name + ".json").read_text())
    # the sha256 computed while writing (the durable prefix re-read, the rest streamed)
    assert sidecar["sha256"] == hashlib.sha256(big).hexdigest()
    assert sidecar["bytes"] == len(big) == sidecar["query"]["bytes"]
    assert not _work(tmp_path, pipeline).exists()  # no part file, no state left
    assert not list((tmp_path / "cache").rglob("*.part"))


@pytest.mark.parametrize("why", ["changed", "no-ranges"])
def test_resume_starts_again_when_the_file_changed_or_ranges_are_ignored(
    tmp_path: Path, service: str, big: bytes, why: str
) -> None:
    Services.files[NAME] = big
    pipeline = _killed_after_first_checkpoint(tmp_path, service)
    if why == "changed":  # a new ETag: If-Range does not match, the whole new file comes
        Services.files[NAME] = big[::-1]
    else:
        Services.ranges = False
    (rec,) = pull_pipeline(load_pipeline(pipeline))
    assert _ranges() == [f"bytes={CHECKPOINT}-"] and rec["requests"] == 1
    got = Path(rec["snapshot"]["path"]).read_bytes()
    assert got == Services.files[NAME] and rec["snapshot"]["bytes"] == len(big)
    assert rec["snapshot"]["sha256"] == hashlib.sha256(got).hexdigest()
    assert not _work(tmp_path, pipeline).exists()


@pytest.mark.parametrize("announced", [True, False])
def test_a_file_over_max_download_mb_is_one_line_and_leaves_nothing(
    tmp_path: Path, service: str, big: bytes, announced: bool
) -> None:
    """With Content-Length the pull ends before the body; without, once 1 MB has come."""
    Services.files[NAME] = big
    Services.no_length = not announced
    text = HTTP_PIPELINE.replace('protocol = "http"', 'protocol = "http"\nmax_download_mb = 1')
    pipeline = pipeline_file(tmp_path, service, text)
    with pytest.raises(PullError) as info:
        pull_pipeline(load_pipeline(pipeline))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("sources.register: http://127.0.0.1:")
    assert "max_download_mb = 1.0 MB" in msg and f"/files/{NAME}" in msg
    size = f"announces {len(big) / 1e6:,.1f} MB" if announced else "the body grew to 1.0 MB"
    assert size in msg
    assert len(Services.log) == 1  # not retried
    assert snapshots_in(tmp_path / "cache") == [] and not _work(tmp_path, pipeline).exists()


def test_a_pull_without_content_length_within_the_bound_is_stored(
    tmp_path: Path, service: str
) -> None:
    Services.no_length = True
    (rec,) = pull_pipeline(load_pipeline(pipeline_file(tmp_path, service)))
    assert Path(rec["snapshot"]["path"]).read_bytes() == Services.files[NAME]


def test_a_killed_store_leaves_part_files_the_next_pull_removes(
    tmp_path: Path, service: str
) -> None:
    pipeline = pipeline_file(tmp_path, service)
    (ps,) = pulled_sources(load_pipeline(pipeline))
    day = tmp_path / "cache" / "register" / "2026-12-01T010203004Z"
    day.mkdir(parents=True)
    leftovers = [day / f".{ps.name}.0a1b2c3d.part", day / f".{ps.name}.4e5f6a7b.json.part"]
    for f in leftovers:
        f.write_bytes(b"half")
    (rec,) = pull_pipeline(load_pipeline(pipeline))
    assert not day.exists()  # the parts and their then empty folder
    assert list(snapshot_bytes(tmp_path / "cache")) == [
        str(Path(rec["snapshot"]["path"]).relative_to(tmp_path / "cache")),
        str(Path(rec["snapshot"]["path"]).relative_to(tmp_path / "cache")) + ".json",
    ]


def test_killed_at_the_last_byte_the_416_starts_the_download_again(
    tmp_path: Path, service: str, big: bytes
) -> None:
    """Killed at the checkpoint that is the file's end: nothing is left to ask for."""
    Services.files[NAME] = big[: 2 * CHECKPOINT]
    pipeline = pipeline_file(tmp_path, service)
    proc = _mfa_pull(pipeline, "pull:download:2")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    Services.log.clear()
    (rec,) = pull_pipeline(load_pipeline(pipeline))
    assert _ranges() == [f"bytes={2 * CHECKPOINT}-", None]  # 416, then the whole file
    assert Path(rec["snapshot"]["path"]).read_bytes() == Services.files[NAME]


@pytest.mark.parametrize(
    ("etag", "url_tail", "resumed"),
    [
        ("strong", NAME, True),
        ('W/"weak"', NAME, False),  # If-Range may not carry a weak validator
        ("strong", "other.parquet", False),  # the part of another url
    ],
)
def test_a_part_file_is_resumed_only_with_a_strong_etag_of_the_same_url(
    tmp_path: Path, service: str, big: bytes, etag: str, url_tail: str, resumed: bool
) -> None:
    from mfa.pull.client import Client
    from mfa.pull.download import download

    Services.files[NAME] = big
    url = f"{service}/files/{NAME}"
    strong = '"' + hashlib.sha256(big).hexdigest()[:20] + '"'  # the stand-in's ETag
    (tmp_path / "f.part").write_bytes(big[:CHECKPOINT] + b"tail not yet durable")
    state = {"url": f"{service}/files/{url_tail}", "bytes": CHECKPOINT}
    (tmp_path / "f.json").write_text(
        json.dumps({**state, "etag": strong if etag == "strong" else etag})
    )
    client = Client("sources.register")
    got = download(client, url, tmp_path, "f", max_bytes=10**9)
    assert got is not None and got.path.read_bytes() == big
    assert got.sha256 == hashlib.sha256(big).hexdigest()
    assert _ranges() == ([f"bytes={CHECKPOINT}-"] if resumed else [None])
    assert got.resumed_at == (CHECKPOINT if resumed else 0)
    assert not (tmp_path / "f.json").exists()
