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


class _Overpass(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []
    #: what the next interpreter calls answer, in order ("ok" when the list is empty)
    script: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # /api/status
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


def test_online_pipeline(overpass: str, tmp_path: Path) -> None:
    body = f"""
name = "online"
crs = "EPSG:25832"
[sources.footprints]
polygon_wkt = "{POLYGON}"
overpass_url = "{overpass}"
"""
    run = run_pipeline(write_pipeline(tmp_path, body + MODEL), tmp_path / "out")
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
