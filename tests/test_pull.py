"""Pulling remote sources (mfa.pull): http and OGC API – Features from loopback stand-ins
serving the sample data; resume after a kill; keys; the pull step in a run."""

from __future__ import annotations

import copy
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.config import load_pipeline
from mfa.errors import ConfigError, PullError, SnapshotCheckError
from mfa.pull import pull_pipeline, pulled_sources
from mfa.pull.client import redact
from mfa.pull.snapshot import assemble
from mfa.textsafe import md_escape
from tests.conftest import MODEL, ROOT, SAMPLE, write_pipeline
from tests.pull_helpers import (
    HTTP_PIPELINE,
    OAPIF_PIPELINE,
    REGISTER,
    Sleeps,
    features,
    files_under,
    pipeline_file,
    service,
    snapshot_bytes,
    snapshots_in,
)
from tests.pull_standin import EPSG_28992, Services

__all__ = ["features", "service"]  # fixtures, imported for pytest


# --- configuration -------------------------------------------------------------------


def test_remote_source_validates_without_network(tmp_path: Path) -> None:
    p = load_pipeline(pipeline_file(tmp_path, "http://127.0.0.1:9"))  # nothing listens there
    (ps,) = pulled_sources(p)
    assert (ps.role, ps.source.protocol, p.sources.register_.path) == ("register", "http", None)
    assert p.input_files()[0].role == "pipeline"  # no data file declared before a pull


def test_mfa_validate_checks_a_remote_source_without_network(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    good = pipeline_file(tmp_path, "http://127.0.0.1:9")  # nothing listens there
    bad = write_pipeline(
        tmp_path,
        'name = "t"\ncrs = "EPSG:25832"\n[sources.register]\nurl = "http://x/ogc"\n'
        'protocol = "oapif"\n' + MODEL,
        "bad.toml",
    )
    for path, code, text in ((good, 0, "ok"), (bad, 2, "needs collection")):
        proc = subprocess.run(
            [sys.executable, "-m", "mfa.cli", "validate", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == code and text in proc.stdout + proc.stderr


def test_layer_with_a_paged_footprint_pull_is_a_config_error(tmp_path: Path) -> None:
    text = OAPIF_PIPELINE.replace('collection = "pand"', 'collection = "pand"\nlayer = "pand"')
    with pytest.raises(ConfigError, match="a paged pull is one layer"):
        load_pipeline(pipeline_file(tmp_path, "http://127.0.0.1:9", text))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('url = "http://x/a.parquet"\npath = "a.parquet"', "give path or url, not both"),
        ('url = "http://x/a.parquet"', "a url needs protocol"),
        ('url = "ftp://x/a"\nprotocol = "http"', r"url must be an http\(s\) address"),
        ('url = "http://u:secret@x/a"\nprotocol = "http"', "must not carry credentials"),
        ('url = "http://x/ogc"\nprotocol = "oapif"', "needs collection"),
        ('url = "http://x/ogc"\nprotocol = "ftp"', "protocol"),
        ('path = "a.parquet"\nprotocol = "http"', "go with url"),
        ('url = "http://x/a"\nprotocol = "http"\napi_key_env = "abc-1 2"', "api_key_env"),
        ('url = "http://x/a"\nprotocol = "http"\nmax_download_mb = 0', "max_download_mb"),
    ],
)
def test_bad_remote_keys_are_one_config_error(tmp_path: Path, table: str, message: str) -> None:
    text = 'name = "t"\ncrs = "EPSG:25832"\n[sources.register]\n' + table + "\n" + MODEL
    with pytest.raises(ConfigError, match=message) as info:
        load_pipeline(write_pipeline(tmp_path, text))
    assert "sources.register" in str(info.value) and "secret" not in str(info.value)


# --- http: one file, conditional GET ---------------------------------------------------


def test_http_pull_then_unchanged_pull_makes_one_conditional_request(
    tmp_path: Path, service: str
) -> None:
    p = load_pipeline(pipeline_file(tmp_path, service))
    (first,) = pull_pipeline(p, day="2026-12-01")
    snap = Path(first["snapshot"]["path"])
    assert first["changed"] and snap.read_bytes() == REGISTER.read_bytes()
    # the run reads the snapshot as its register file, and declares it as an input
    p = load_pipeline(p.source_file)
    assert p.sources.register_.path == snap
    assert ("register", snap) in [(f.role, f.path) for f in p.input_files()]
    before = snapshot_bytes(tmp_path / "cache")
    Services.log.clear()
    (second,) = pull_pipeline(p, day="2026-12-02")
    assert not second["changed"] and second["snapshot"]["path"] == str(snap)
    assert len(Services.log) == 1 and "If-None-Match" in Services.log[0][1]
    assert snapshot_bytes(tmp_path / "cache") == before  # nothing written


def test_http_changed_file_is_a_new_snapshot_and_the_old_one_stays(
    tmp_path: Path, service: str
) -> None:
    """Even twice in one day: each change is a snapshot of its own (folder per fetch time)."""
    p = load_pipeline(pipeline_file(tmp_path, service))
    (first,) = pull_pipeline(p)
    Services.files["bbr_bygning_2020.parquet"] = (SAMPLE / "delft_bgt_pand.gpkg").read_bytes()
    (second,) = pull_pipeline(p)
    assert second["changed"] and second["snapshot"]["day"] > first["snapshot"]["day"]
    assert Path(first["snapshot"]["path"]).read_bytes() == REGISTER.read_bytes()
    assert load_pipeline(p.source_file).sources.register_.path == Path(second["snapshot"]["path"])


def test_http_503_with_retry_after_and_a_dropped_body_are_survived(
    tmp_path: Path, service: str
) -> None:
    Services.script[:] = ["503", "drop"]
    sleeps = Sleeps()
    (rec,) = pull_pipeline(load_pipeline(pipeline_file(tmp_path, service)), sleep=sleeps)
    assert Path(rec["snapshot"]["path"]).read_bytes() == REGISTER.read_bytes()
    assert rec["requests"] == 3 and sleeps[0] == 1.0  # Retry-After: 1, then backoff
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_http_503_storm_is_one_line_and_publishes_nothing(tmp_path: Path, service: str) -> None:
    Services.script[:] = ["503"] * 10
    sleeps = Sleeps()
    p = load_pipeline(pipeline_file(tmp_path, service))
    with pytest.raises(PullError) as info:
        pull_pipeline(p, sleep=sleeps)
    msg = str(info.value)
    assert "\n" not in msg and "sources.register" in msg and "HTTP 503" in msg
    assert "/files/bbr_bygning_2020.parquet" in msg and "try again later" in msg
    assert len(sleeps) == p.sources.register_.retries and snapshots_in(tmp_path / "cache") == []


def test_refused_connection_fails_at_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    with pytest.raises(PullError, match="connection refused") as info:
        pull_pipeline(
            load_pipeline(pipeline_file(tmp_path, f"http://127.0.0.1:{port}")), sleep=sleeps
        )
    assert sleeps == [] and "\n" not in str(info.value)


# --- OGC API - Features: pages, checks, resume --------------------------------------------


def test_oapif_pull_gives_the_service_features_in_its_crs(
    tmp_path: Path, service: str, features: list[dict]
) -> None:
    p = load_pipeline(pipeline_file(tmp_path, service, OAPIF_PIPELINE, page=50))
    (rec,) = pull_pipeline(p)
    assert rec["rows"] == 160 and rec["requests"] == 4  # 50 + 50 + 50 + 10
    got = gpd.read_file(rec["snapshot"]["path"])
    ref = gpd.read_file(SAMPLE / "delft_bgt_pand.gpkg", layer="pand")
    assert got.crs.to_epsg() == 28992
    assert got["identificatiebagpnd"].tolist() == ref["identificatiebagpnd"].tolist()
    # GEOS: the pulled footprints are the published ones (coordinates kept to < 1 mm)
    assert shapely.equals_exact(got.geometry.values, ref.geometry.values, tolerance=1e-3).all()
    # unchanged: every page fetched again (no validator for a collection), nothing written
    before = snapshot_bytes(tmp_path / "cache")
    Services.log.clear()
    (again,) = pull_pipeline(load_pipeline(p.source_file))
    assert not again["changed"] and len(Services.log) == 4
    assert snapshot_bytes(tmp_path / "cache") == before
    # a change on the last page only (page 1 and its ETag unchanged) is a new snapshot
    last = Services.features[-1]
    Services.features[-1] = dict(last, properties=dict(last["properties"], bgt_status="gesloopt"))
    (changed,) = pull_pipeline(load_pipeline(p.source_file))
    assert changed["changed"] and changed["snapshot"]["sha256"] != again["snapshot"]["sha256"]


@pytest.mark.parametrize(
    ("script", "sleeps_at_least"), [(["ok", "503"], [1.0]), (["ok", "ok", "drop"], [1.0])]
)
def test_oapif_page_503_or_dropped_page_is_retried(
    tmp_path: Path, service: str, script: list[str], sleeps_at_least: list[float]
) -> None:
    reference = tmp_path / "ref"
    reference.mkdir()
    (ref,) = pull_pipeline(load_pipeline(pipeline_file(reference, service, OAPIF_PIPELINE)))
    Services.script[:] = script
    sleeps = Sleeps()
    (rec,) = pull_pipeline(
        load_pipeline(pipeline_file(tmp_path, service, OAPIF_PIPELINE)), sleep=sleeps
    )
    assert sleeps == sleeps_at_least
    assert Path(rec["snapshot"]["path"]).read_bytes() == Path(ref["snapshot"]["path"]).read_bytes()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ("html", PullError, "text/html instead of GeoJSON"),
        ("renamed", SnapshotCheckError, "lack the required field 'bgt_status'"),
        ("total", SnapshotCheckError, "the service matched 170"),
        ("duplicate", SnapshotCheckError, "occur more than once"),
        ("crs", SnapshotCheckError, "asked for CRS"),
    ],
)
def test_oapif_bad_answers_are_typed_one_line_errors_that_keep_the_last_snapshot(
    tmp_path: Path, service: str, features: list[dict], change: str, error: type, message: str
) -> None:
    p = load_pipeline(pipeline_file(tmp_path, service, OAPIF_PIPELINE))
    (good,) = pull_pipeline(p)
    Services.features = [dict(f, properties=dict(f["properties"], v=2)) for f in features]
    if change == "html":
        Services.script[:] = ["ok", "html"]
    elif change == "renamed":
        for f in Services.features[100:]:
            f["properties"]["status"] = f["properties"].pop("bgt_status")
    elif change == "total":
        Services.claimed_total = 170
    elif change == "duplicate":
        Services.features[7] = dict(Services.features[7], id=Services.features[3]["id"])
    if change == "crs":
        text = OAPIF_PIPELINE.replace('"{CRS}"', '"EPSG:28992"')  # the server wants the URI
        p = load_pipeline(pipeline_file(tmp_path, service, text))
    with pytest.raises(error, match=message) as info:
        pull_pipeline(p)
    assert "\n" not in str(info.value) and "sources.footprints" in str(info.value)
    assert load_pipeline(p.source_file).sources.footprints.file in (
        Path(good["snapshot"]["path"]),
        None,
    )
    assert len(snapshots_in(tmp_path / "cache")) == 2  # the good one: data + sidecar


def _mfa_pull(pipeline: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    env.pop("MFA_FAILPOINT", None)
    if failpoint:
        env["MFA_FAILPOINT"] = failpoint
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mfa.cli",
            "pull",
            str(pipeline),
            "-o",
            str(pipeline.parent / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pull_killed_after_page_k_resumes_at_k_plus_1_and_ends_byte_identical(
    tmp_path: Path, service: str
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    (ref,) = pull_pipeline(load_pipeline(pipeline_file(whole, service, OAPIF_PIPELINE, page=20)))
    pipeline = pipeline_file(killed, service, OAPIF_PIPELINE, page=20)
    Services.log.clear()
    proc = _mfa_pull(pipeline, "pull:page:3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(Services.log) == 3 and snapshots_in(killed / "cache") == []
    Services.log.clear()
    proc = _mfa_pull(pipeline)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(Services.log) == 5  # pages 4..8 of 8, none again
    assert "cursor=" in Services.log[0][0]  # continued from page 3's next link
    (snap,) = (s for s in snapshots_in(killed / "cache") if s.suffix == ".geojson")
    assert snap.read_bytes() == Path(ref["snapshot"]["path"]).read_bytes()
    assert not list((killed / "cache").rglob("page-*"))  # the resume state is gone


def test_api_key_comes_from_the_environment_and_is_never_written(
    tmp_path: Path, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "k3y-Secret-123456"
    Services.key = key
    text = HTTP_PIPELINE.replace(
        'protocol = "http"', 'protocol = "http"\napi_key_env = "T_MFA_KEY"'
    )
    p = load_pipeline(pipeline_file(tmp_path, service, text))
    with pytest.raises(PullError, match="T_MFA_KEY"):
        pull_pipeline(p)  # not set: said so, no request
    monkeypatch.setenv("T_MFA_KEY", "bad-key-0xZZ")
    with pytest.raises(PullError, match=r"HTTP 401.*api_key_env") as info:
        pull_pipeline(p)
    assert "bad-key-0xZZ" not in str(info.value)
    monkeypatch.setenv("T_MFA_KEY", key)
    (rec,) = pull_pipeline(p)
    assert rec["changed"] and key not in json.dumps(rec)
    for data in files_under(tmp_path).values():
        assert key.encode() not in data


# --- pure parts ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, 160), max_size=12))
def test_assembled_bytes_do_not_depend_on_the_paging(
    features: list[dict], tmp_path_factory: pytest.TempPathFactory, cuts: list[int]
) -> None:
    """However the service pages, the snapshot is the same bytes."""
    edges = [0, *sorted(cuts), 160]
    pages = [
        json.dumps({"type": "FeatureCollection", "features": features[a:b]}).encode()
        for a, b in itertools.pairwise(edges)
    ]
    folder = tmp_path_factory.mktemp("asm")
    outs = []
    for name, bodies in (("one", [json.dumps({"features": features}).encode()]), ("paged", pages)):
        n = assemble(
            bodies,
            folder / name,
            what="t",
            crs=f"<{EPSG_28992}>",
            requested_crs=EPSG_28992,
            id_field=None,
            required_fields=["bgt_status"],
            number_matched=160,
        )
        assert n == 160
        outs.append((folder / name).read_bytes())
    assert outs[0] == outs[1]


@given(key=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=6, max_size=40))
def test_redact_hides_keys_in_query_and_anywhere(key: str) -> None:
    url = f"https://services.datafordeler.dk/BBR/v2?apikey={key}&where=x&path/{key}"
    assert key not in redact(url, (key,))
    assert "***" in redact(f"https://x/y?token={key}")


# --- the pull step in a run -------------------------------------------------------------


def test_run_pulls_first_and_if_changed_skips_when_the_service_is_unchanged(
    tmp_path: Path, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfa.incremental import unchanged_run
    from mfa.run import STEPS, run_pipeline

    assert [s.name for s in STEPS][:2] == ["pull", "buildings"]
    pipeline = pipeline_file(tmp_path, service, OAPIF_PIPELINE, page=50)
    run = run_pipeline(pipeline, tmp_path / "out", force=False)
    assert len(Services.log) == 4  # asked once: by the --if-changed check, not again by the step
    manifest = json.loads((run / "run.json").read_text())
    (pulled,) = manifest["pulled"]
    snap = pulled["snapshot"]["path"]
    assert pulled["changed"] and pulled["rows"] == 160 and pulled["reused_check"]
    assert {"role": "footprints", "path": snap} in [
        {"role": i["role"], "path": i["path"]} for i in manifest["inputs"]
    ]
    assert manifest["row_counts"]["records_read"] == 160
    report = (run / "report.md").read_text()
    # (cells are Markdown-escaped: mfa.textsafe.md_escape)
    assert "## Pulled sources" in report
    assert md_escape(f"{pulled['snapshot']['day']} (new)") in report
    # nightly with --if-changed (the last check long past): the pages again, nothing written
    monkeypatch.setattr("mfa.pull.RECHECK_S", 0.0)
    Services.log.clear()
    before = snapshot_bytes(tmp_path / "cache")
    assert unchanged_run(pipeline, tmp_path / "out") == run.resolve()
    assert len(Services.log) == 4 and snapshot_bytes(tmp_path / "cache") == before
    # the service changed overnight: the run is needed again
    Services.features = Services.features[:150]
    assert unchanged_run(pipeline, tmp_path / "out") is None


def test_rows_halving_overnight_is_a_warning_in_the_record(tmp_path: Path, service: str) -> None:
    p = load_pipeline(pipeline_file(tmp_path, service, OAPIF_PIPELINE, page=50))
    (first,) = pull_pipeline(p)
    assert first["warning"] is None
    Services.features = Services.features[:80]
    (second,) = pull_pipeline(p)
    assert second["changed"] and second["rows"] == 80
    assert "50% fewer than the previous snapshot's 160" in second["warning"]


def test_a_server_that_never_answers_times_out_boundedly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        text = HTTP_PIPELINE.replace(
            'protocol = "http"', 'protocol = "http"\nretries = 1\ntimeout_s = 0.3'
        )
        sleeps = Sleeps()
        with pytest.raises(PullError, match=r"no answer within 0.3 s after 2 attempts") as info:
            pull_pipeline(load_pipeline(pipeline_file(tmp_path, base, text)), sleep=sleeps)
    assert sleeps == [1.0] and "\n" not in str(info.value)


def test_retry_after_as_seconds_or_http_date() -> None:
    from datetime import UTC, datetime

    from mfa.pull.client import _retry_after

    now = datetime(2026, 12, 2, 2, 0, 0, tzinfo=UTC)
    assert _retry_after("120", now) == 120.0
    assert _retry_after("Wed, 02 Dec 2026 02:00:30 GMT", now) == 30.0
    assert _retry_after("Wed, 02 Dec 2026 01:00:00 GMT", now) == 0.0
    assert _retry_after("soon", now) is None and _retry_after(None, now) is None


# --- a cheap freshness check for OGC API (modified_field) ------------------------------


def test_oapif_modified_field_makes_an_unchanged_pull_one_request(
    tmp_path: Path, service: str
) -> None:
    Services.features = copy.deepcopy(Services.features)  # the fixture's stay as they are
    for k, f in enumerate(Services.features):  # a publication time per feature
        f["properties"] = {**f["properties"], "tijdstip": f"2026-11-{1 + k % 28:02d}T08:00:00Z"}
    text = OAPIF_PIPELINE.replace(
        'collection = "pand"', 'collection = "pand"\nmodified_field = "tijdstip"'
    )
    p = load_pipeline(pipeline_file(tmp_path, service, text, page=50))
    (first,) = pull_pipeline(p)
    assert first["changed"] and first["requests"] == 1 + 4
    assert first["fingerprint"] == {
        "number_matched": 160,
        "newest": "2026-11-28T08:00:00Z",
        "field": "tijdstip",
    }
    before = snapshot_bytes(tmp_path / "cache")
    (second,) = pull_pipeline(p)
    assert not second["changed"] and second["requests"] == 1  # the check, no page
    assert snapshot_bytes(tmp_path / "cache") == before
    # an edit moves the newest time: the pages again, a new snapshot
    Services.features[7]["properties"]["bgt_status"] = "gesloopt"
    Services.features[7]["properties"]["tijdstip"] = "2026-12-01T08:00:00Z"
    (third,) = pull_pipeline(p)
    assert third["changed"] and third["requests"] == 5
    # a deletion moves the count
    Services.features.pop(3)
    (fourth,) = pull_pipeline(p)
    assert fourth["changed"] and fourth["rows"] == 159 and fourth["requests"] == 5
    # a server that ignores sortby cannot be checked cheaply: one line, nothing written
    Services.ignore_sortby = True
    Services.features.append(dict(Services.features[0], id="extra"))
    Services.features[-1]["properties"] = {
        **Services.features[0]["properties"],
        "tijdstip": "2026-12-09T00:00:00Z",
        "identificatiebagpnd": "x",
    }
    with pytest.raises(PullError, match="ignores sortby=-tijdstip") as info:
        pull_pipeline(p)
    assert "\n" not in str(info.value)
