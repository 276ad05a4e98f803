"""Is a run needed? A digest of everything a run depends on (light imports only)."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import mfa
from mfa.config import Pipeline, load_pipeline
from mfa.errors import MfaError
from mfa.io.files import read_together, sha256_file

log = logging.getLogger(__name__)

__all__ = ["code_digest", "run_key", "unchanged_run"]

MANIFEST = "run.json"


def _input_files(p: Pipeline) -> list[Path]:
    """Every local file a run of ``p`` reads (:meth:`mfa.config.Pipeline.input_files`)."""
    return [f.path for f in p.input_files()]


def code_digest() -> str:
    """sha256 of mfa's own source files (so a code change without a version bump counts)."""
    root = Path(mfa.__file__).parent
    h = hashlib.sha256(mfa.__version__.encode())
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _online_snapshot_sha(p: Pipeline, day: str, as_of: str | None = None) -> str | None:
    """sha256 of the snapshot an online source would use on ``day`` (pinned, that day's,
    or a pinned run's: :func:`mfa.io.osm.chosen_osm_snapshot`), if it was already
    downloaded; None when the run would have to download."""
    from mfa.io.osm import chosen_osm_snapshot

    fp = p.sources.footprints
    assert fp is not None
    try:
        snap = chosen_osm_snapshot(fp, p.cache_root(), day, as_of)[0]
    except MfaError:
        return None  # a damaged or missing pinned snapshot, a bad day: the run will say so
    return None if snap is None else snap.sha256


def run_key(p: Pipeline, day: str | None = None, as_of: str | None = None) -> str | None:
    """A digest of everything a run's layers depend on: the content of every input and
    config file, the validated pipeline and the mfa version.

    An online source counts by the content of the snapshot the run would use on ``day``
    (``YYYY-MM-DD``, default today in UTC): the pinned one, that day's, or that of the
    pinned run's day ``as_of``. None when there is no such snapshot yet (its content is
    only known after downloading).
    """
    h = hashlib.sha256()
    h.update(code_digest().encode())
    h.update(json.dumps(p.model_dump(mode="json"), sort_keys=True).encode())
    if p.sources.footprints is not None and p.sources.footprints.online:
        sha = _online_snapshot_sha(p, day or datetime.now(UTC).date().isoformat(), as_of)
        if sha is None:
            return None
        h.update(b"osm-snapshot")
        h.update(sha.encode())
    for f in (g for i in _input_files(p) for g in read_together(i)):  # with sidecars
        h.update(str(f.name).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def published_problem(run_dir: Path, manifest: dict) -> str | None:
    """What is wrong with a published run's files against the sha256 its ``run.json``
    lists (None: every file is as published)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "its run.json lists no file hashes (an older mfa wrote it)"
    for name, record in files.items():
        f = run_dir / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != record.get("bytes") or sha256_file(f) != record.get("sha256"):
            return f"{name} was changed after it was published (size or sha256 differ)"
    return None


def unchanged_run(
    pipeline_file: str | Path, output_dir: str | Path | None = None, as_of: str | None = None
) -> Path | None:
    """The latest published run if nothing it depends on changed since (see :func:`run_key`)
    and its files are as published; a damaged ``latest`` means a full run (with a warning
    that says why), never an error.

    Remote sources are pulled first (:mod:`mfa.pull`: conditional requests; a new snapshot
    only when the service's data changed): their content is only known after that. With
    ``as_of`` (a pinned day) nothing is pulled: the snapshots of that day are compared.
    """
    p = load_pipeline(pipeline_file, as_of)
    from mfa import pull

    if pull.pulled_sources(p) and as_of is None:
        pull.pull_pipeline(p, reuse_within_s=pull.RECHECK_S)
        p = load_pipeline(pipeline_file)
    latest = p.output_root(Path(output_dir) if output_dir is not None else None) / p.name / "latest"
    manifest = latest / MANIFEST
    if not latest.exists():
        return None
    try:
        data = json.loads(manifest.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s is unreadable (%s): running in full", manifest, exc)
        return None
    key = run_key(p, as_of=as_of)
    if key is None or key != data.get("run_key"):
        return None
    problem = published_problem(latest, data)
    if problem is not None:
        log.warning("%s: %s; not trusted as unchanged: running in full", latest, problem)
        return None
    return latest.resolve()
