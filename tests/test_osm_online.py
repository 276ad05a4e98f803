"""The online OSM path, through osmnx, against a local stand-in for the Overpass API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from mfa.io.osm import fetch_osm
from mfa.run import run_pipeline
from tests.conftest import MODEL, write_pipeline

# two buildings (a tagged house with levels, an untagged 'yes') and a bus stop node
SQUARE = [(10.0690, 48.1360), (10.0692, 48.1360), (10.0692, 48.1361), (10.0690, 48.1361)]
RESPONSE = {
    "version": 0.6,
    "elements": [
        *[
            {"type": "node", "id": i + 1, "lat": lat, "lon": lon}
            for i, (lon, lat) in enumerate(SQUARE)
        ],
        *[
            {"type": "node", "id": i + 11, "lat": lat + 0.0003, "lon": lon}
            for i, (lon, lat) in enumerate(SQUARE)
        ],
        {
            "type": "way",
            "id": 100,
            "nodes": [1, 2, 3, 4, 1],
            "tags": {"building": "house", "building:levels": "2"},
        },
        {"type": "way", "id": 101, "nodes": [11, 12, 13, 14, 11], "tags": {"building": "yes"}},
    ],
}


FILE_BODY = b"id;area\n" + b"".join(f"{i};{i * 10}\n".encode() for i in range(5000))


class _Overpass(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []
    #: what the next interpreter calls answer, in order ("ok" when the list is empty)
    script: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # /api/status, or /files/<name> for plain downloads
        if self.path.startswith("/files/"):
            type(self).requests.append(self.path)
            mode = type(self).script.pop(0) if type(self).script else "ok"
            body = FILE_BODY
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if mode == "ok" else body[: len(body) // 2])
            return
        body = (
            b"Connected as: 1\nCurrent time: 2026-11-24T00:00:00Z\nAnnounced endpoint: none\n"
            b"Rate limit: 2\n2 slots available now.\n"
            b"Currently running queries (pid, space limit, time limit, start time):\n"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # /api/interpreter
        length = int(self.headers.get("Content-Length", 0))
        type(self).requests.append(self.rfile.read(length).decode())
        mode = type(self).script.pop(0) if type(self).script else "ok"
        status, ctype, body = 200, "application/json", json.dumps(RESPONSE).encode()
        if mode in ("429", "504"):
            status, body = int(mode), b'{"remark": "busy"}'
        elif mode == "truncated":
            body = body[: len(body) // 2]
        elif mode == "html":
            ctype, body = "text/html", b"<html><body><h1>Dispatcher error</h1></body></html>"
        elif mode == "empty":
            body = json.dumps({"version": 0.6, "elements": []}).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def overpass() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Overpass)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Overpass.requests = []
    _Overpass.script = []
    try:
        yield f"http://127.0.0.1:{server.server_port}/api"
    finally:
        server.shutdown()
        server.server_close()


POLYGON = "POLYGON ((10.068 48.135, 10.071 48.135, 10.071 48.137, 10.068 48.137, 10.068 48.135))"


def test_fetch_polygon_through_osmnx(overpass: str, tmp_path: Path) -> None:
    raw = fetch_osm(polygon_wkt=POLYGON, overpass_url=overpass, cache_dir=tmp_path / "cache")
    assert sorted(raw.osm_id) == [100, 101]
    assert "building" in _Overpass.requests[0].replace("%22", '"')
    assert any((tmp_path / "cache").iterdir())  # the response was cached


def _online(tmp_path: Path, overpass: str, extra: str = "", name: str = "p.toml") -> Path:
    body = f"""
name = "online"
crs = "EPSG:25832"
[sources.footprints]
polygon_wkt = "{POLYGON}"
overpass_url = "{overpass}"
{extra}
[cache]
dir = "{tmp_path / "cache"}"
"""
    return write_pipeline(tmp_path, body + MODEL, name)


def test_online_pipeline(overpass: str, tmp_path: Path) -> None:
    run = run_pipeline(_online(tmp_path, overpass), tmp_path / "out")
    import geopandas as gpd

    b = gpd.read_parquet(run / "buildings.parquet").set_index("building_id")
    assert b.loc["osm:way/100", "floors_source"] == "osm"
    assert b.loc["osm:way/101", "function_source"] == "imputed"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["inputs"][0]["query"] == POLYGON


def test_busy_server_is_retried_then_succeeds(overpass: str) -> None:
    _Overpass.script = ["429", "504"]
    raw = fetch_osm(polygon_wkt=POLYGON, overpass_url=overpass, backoff_s=0.01)
    assert sorted(raw.osm_id) == [100, 101]
    assert len(_Overpass.requests) == 3


@pytest.mark.parametrize("mode", ["504", "truncated", "html"])
def test_transient_failures_give_up_after_bounded_attempts(overpass: str, mode: str) -> None:
    import time

    from mfa.errors import TransientFetchError

    _Overpass.script = [mode] * 5
    t0 = time.monotonic()
    with pytest.raises(TransientFetchError, match="gave up after 3 attempts"):
        fetch_osm(polygon_wkt=POLYGON, overpass_url=overpass, backoff_s=0.01)
    assert len(_Overpass.requests) == 3 and time.monotonic() - t0 < 30


def test_failed_download_is_not_cached_or_parsed(overpass: str, tmp_path: Path) -> None:
    from mfa.errors import TransientFetchError

    cache = tmp_path / "cache"
    _Overpass.script = ["truncated"] * 3
    with pytest.raises(TransientFetchError):
        fetch_osm(polygon_wkt=POLYGON, overpass_url=overpass, cache_dir=cache, backoff_s=0.01)
    assert not cache.exists() or not any(cache.iterdir())
    raw = fetch_osm(polygon_wkt=POLYGON, overpass_url=overpass, cache_dir=cache)
    assert len(raw) == 2 and any(cache.iterdir())


def test_empty_area_is_bad_input_not_retried(overpass: str) -> None:
    from mfa.errors import InputDataError

    _Overpass.script = ["empty"]
    with pytest.raises(InputDataError, match="no buildings in the requested area"):
        fetch_osm(polygon_wkt=POLYGON, overpass_url=overpass, backoff_s=0.01)
    assert len(_Overpass.requests) == 1


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dated_snapshot_is_written_then_reused_without_network(
    overpass: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from mfa.run import unchanged_run

    pipeline = _online(tmp_path, overpass)
    first = run_pipeline(pipeline, tmp_path / "out")
    assert len(_Overpass.requests) == 1
    today = datetime.now(UTC).date().isoformat()
    (snap,) = (tmp_path / "cache" / "osm" / today).glob("*.parquet")
    side = json.loads((snap.parent / (snap.name + ".json")).read_text())
    assert side["sha256"] == _sha(snap) and side["bytes"] == snap.stat().st_size
    assert side["query"]["polygon_wkt"] == POLYGON and side["query"]["overpass_url"] == overpass
    assert side["day"] == today and side["fetched_at"].startswith(today)
    assert not list(snap.parent.glob(".*"))  # no part files left
    used = json.loads((first / "run.json").read_text())["inputs"][0]["snapshot"]
    assert used["path"] == str(snap) and used["sha256"] == side["sha256"]
    assert used["bytes"] == side["bytes"] and used["reused"] is False
    assert json.loads((first / "run.json").read_text())["run_key"] is not None

    _Overpass.requests.clear()
    second = run_pipeline(pipeline, tmp_path / "out")  # forced: recomputed, from the cache
    assert _Overpass.requests == []
    again = json.loads((second / "run.json").read_text())["inputs"][0]["snapshot"]
    assert again["reused"] is True and again["sha256"] == side["sha256"]
    import pandas as pd

    pd.testing.assert_frame_equal(
        pd.read_parquet(first / "buildings.parquet"), pd.read_parquet(second / "buildings.parquet")
    )
    # the run key is known once the snapshot exists: an unchanged re-run does nothing
    assert unchanged_run(pipeline, tmp_path / "out") == second.resolve()
    assert _Overpass.requests == []


def test_pinned_snapshot_is_offline_and_reproducible(overpass: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from mfa.errors import InputNotFoundError

    first = run_pipeline(_online(tmp_path, overpass), tmp_path / "out")
    today = datetime.now(UTC).date().isoformat()
    _Overpass.requests.clear()
    _Overpass.script = ["html"] * 10  # the server is broken now: a pinned run never asks it
    for pin in (today, "latest"):
        p = _online(tmp_path, overpass, f'snapshot = "{pin}"', name=f"{pin}.toml")
        run = run_pipeline(p, tmp_path / "out")
        m = json.loads((run / "run.json").read_text())
        assert m["inputs"][0]["snapshot"]["day"] == today
        assert m["totals_t"] == json.loads((first / "run.json").read_text())["totals_t"]
    assert _Overpass.requests == []
    missing = _online(tmp_path, overpass, 'snapshot = "2001-01-01"', name="old.toml")
    with pytest.raises(InputNotFoundError, match=f"snapshots exist for {today}"):
        run_pipeline(missing, tmp_path / "out")
    assert _Overpass.requests == []


def test_failed_download_leaves_no_snapshot_and_the_old_one_intact(
    overpass: str, tmp_path: Path
) -> None:
    from mfa.config import FootprintSource
    from mfa.errors import TransientFetchError
    from mfa.io.osm import osm_snapshot

    src = FootprintSource(polygon_wkt=POLYGON, overpass_url=overpass)
    cache = tmp_path / "cache"
    old, reused = osm_snapshot(src, cache, "2026-11-23")
    assert not reused and old.sha256 == _sha(old.path)
    before = {p: _sha(p) for p in (cache / "osm").rglob("*") if p.is_file()}
    _Overpass.script = ["truncated"] * 3
    with pytest.raises(TransientFetchError):
        osm_snapshot(src, cache, "2026-11-24", backoff_s=0.01)
    assert {p: _sha(p) for p in (cache / "osm").rglob("*") if p.is_file()} == before
    day = cache / "osm" / "2026-11-24"
    assert not day.exists() or not any(day.iterdir())
    # a snapshot edited after download is refused, never silently used
    old.path.write_bytes(old.path.read_bytes()[:-10])
    from mfa.errors import InputDataError

    with pytest.raises(InputDataError, match="does not match its sidecar"):
        osm_snapshot(src, cache, "2026-11-23")


def test_url_download_is_atomic(overpass: str, tmp_path: Path) -> None:
    from mfa.errors import TransientFetchError
    from mfa.io.cache import download_url

    url = overpass.removesuffix("/api") + "/files/register.csv"
    cache = tmp_path / "cache"
    _Overpass.script = ["cut"]
    with pytest.raises(TransientFetchError, match=r"register\.csv"):
        download_url(cache, "register", url, "2026-11-24")
    folder = cache / "register" / "2026-11-24"
    assert not any(folder.iterdir())  # no part file, nothing at the final name
    snap = download_url(cache, "register", url, "2026-11-24")
    assert snap.path == folder / "register.csv" and snap.path.read_bytes() == FILE_BODY
    assert snap.sha256 == _sha(snap.path) and snap.bytes == len(FILE_BODY)
    n = len(_Overpass.requests)
    assert download_url(cache, "register", url, "2026-11-24") == snap  # reused, no request
    assert len(_Overpass.requests) == n


# --- a pinned run (mfa run --as-of) ------------------------------------------------------


def _query_sent(body: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(body)


def _snapshot_of(run: Path) -> dict:
    (record,) = [i for i in json.loads((run / "run.json").read_text())["inputs"] if "query" in i]
    return record


def test_a_pinned_run_asks_overpass_for_that_day_once_then_reads_the_same_snapshot(
    overpass: str, tmp_path: Path
) -> None:
    from mfa.incremental import unchanged_run

    pipeline = _online(tmp_path, overpass)
    first = run_pipeline(pipeline, tmp_path / "out", as_of="2025-03-04")
    (sent,) = _Overpass.requests
    assert '[date:"2025-03-04T00:00:00Z"]' in _query_sent(sent)  # Overpass's attic state
    assert _query_sent(sent).startswith("data=[out:json][timeout:")
    record = _snapshot_of(first)
    snap = Path(record["snapshot"]["path"])
    side = json.loads(snap.with_name(snap.name + ".json").read_text())
    assert side["query"]["date"] == "2025-03-04T00:00:00Z" and record["as_of"] == "2025-03-04"
    assert record["snapshot"]["reused"] is False
    assert json.loads((first / "run.json").read_text())["as_of"] == "2025-03-04"

    _Overpass.requests.clear()
    _Overpass.script = ["html"] * 10  # broken now: a run pinned to that day never asks
    second = run_pipeline(pipeline, tmp_path / "out", as_of="2025-03-04")
    assert _Overpass.requests == []
    again = _snapshot_of(second)["snapshot"]
    assert again["path"] == str(snap) and again["sha256"] == side["sha256"] and again["reused"]
    for layer in ("buildings.parquet", "districts.parquet"):
        if (first / layer).exists():
            assert (first / layer).read_bytes() == (second / layer).read_bytes(), layer
    assert unchanged_run(pipeline, tmp_path / "out", as_of="2025-03-04") == second.resolve()
    assert _Overpass.requests == []
    # another day is another query and another snapshot; an unpinned run asks without a date
    _Overpass.script = []
    other = run_pipeline(pipeline, tmp_path / "out", as_of="2025-03-05")
    assert '[date:"2025-03-05T00:00:00Z"]' in _query_sent(_Overpass.requests[0])
    assert _snapshot_of(other)["snapshot"]["path"] != str(snap)
    run_pipeline(pipeline, tmp_path / "out")
    assert "[date:" not in _query_sent(_Overpass.requests[1])


def test_a_pinned_run_of_a_day_with_a_run_reads_that_days_snapshot(
    overpass: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    pipeline = _online(tmp_path, overpass)
    today = datetime.now(UTC).date().isoformat()
    first = run_pipeline(pipeline, tmp_path / "out")  # today's: the current state
    _Overpass.requests.clear()
    pinned = run_pipeline(pipeline, tmp_path / "out", as_of=today)
    assert _Overpass.requests == []  # what that day's run read, not an attic query
    assert _snapshot_of(pinned)["snapshot"]["sha256"] == _snapshot_of(first)["snapshot"]["sha256"]
    assert (pinned / "buildings.parquet").read_bytes() == (first / "buildings.parquet").read_bytes()


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("2011-06-30", r"history from 2012-09-12 on .* pin 2012-09-13 or later"),
        ("2999-01-01", r"after today .* no state of that day yet"),
        ("2025-13-01", r"not a day; give YYYY-MM-DD"),
        ("25-03-04", r"not a day; give YYYY-MM-DD"),
    ],
)
def test_a_pinned_day_overpass_cannot_answer_is_one_config_error_before_any_request(
    overpass: str, tmp_path: Path, as_of: str, message: str
) -> None:
    from mfa.config import load_pipeline
    from mfa.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as err:
        load_pipeline(_online(tmp_path, overpass), as_of)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=message):
        run_pipeline(_online(tmp_path, overpass), tmp_path / "out", as_of=as_of)
    assert _Overpass.requests == []


def test_as_of_and_the_sources_own_snapshot_pin_are_one_error(
    overpass: str, tmp_path: Path
) -> None:
    from mfa.config import load_pipeline
    from mfa.errors import ConfigError

    p = _online(tmp_path, overpass, 'snapshot = "latest"')
    with pytest.raises(ConfigError, match="both pin the OSM query; remove snapshot"):
        load_pipeline(p, "2025-03-04")
