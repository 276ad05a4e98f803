"""A loopback stand-in for an OGC WCS 2.0.1 service, run as its own process (GDAL in the
test process never shares one with the server).

``python tests/wcs_standin.py`` prints its base URL and serves until stdin closes:

- ``GET /wcs?service=WCS&version=2.0.1&request=GetCoverage&coverageId=…&subset=x(a,b)
  &subset=y(c,d)&subsettingCrs=…&outputCrs=…&format=image/tiff`` (KVP, OGC 09-147r3):
  the coverages ``ahn3_ndsm``, ``ahn3_dsm``, ``ahn3_dtm`` are the Delft AHN3 rasters of
  ``geodata/sample`` (EPSG:28992, axes ``x``/``y``); the subset, clipped to the coverage's
  extent as servers do, is cut on the pixel grid with rasterio and answered as GeoTIFF
  bytes (``image/tiff``) with an ``ETag``; ``If-None-Match`` with it gives ``304``.
  Errors are OWS 2.0 ExceptionReports (OGC 06-121r9) with the WCS 2.0 codes and statuses:
  ``NoSuchCoverage`` (404), ``InvalidAxisLabel`` (404), ``InvalidSubsetting`` (404: a
  subset outside the coverage), ``SubsettingCrs-NotSupported`` (400),
  ``InvalidParameterValue`` (400: format, version), ``OperationNotSupported`` (501);
- ``POST /script`` (a JSON list): how the next GetCoverage requests misbehave, in order:
  ``503``, ``exception200`` (an ExceptionReport with status 200, as some servers do),
  ``html`` (an HTML page with status 200), ``png`` (an image without georeferencing);
- ``GET /log``: the GetCoverage requests received (path and query, and If-None-Match);
  ``POST /reset`` empties it and the script.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

SAMPLE = Path(__file__).resolve().parents[1] / "geodata" / "sample"
COVERAGES = {
    "ahn3_ndsm": SAMPLE / "delft_ahn3_ndsm_0p5m.tif",
    "ahn3_dsm": SAMPLE / "delft_ahn3_dsm_0p5m.tif",
    "ahn3_dtm": SAMPLE / "delft_ahn3_dtm_0p5m.tif",
}
CRS_URI = "http://www.opengis.net/def/crs/EPSG/0/28992"


def exception_report(code: str, locator: str, text: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ows:ExceptionReport xmlns:ows="http://www.opengis.net/ows/2.0" version="2.0.1" '
        'xml:lang="en">\n'
        f'  <ows:Exception exceptionCode="{code}" locator="{locator}">\n'
        f"    <ows:ExceptionText>{text}</ows:ExceptionText>\n"
        "  </ows:Exception>\n</ows:ExceptionReport>\n"
    ).encode()


def cut(path: Path, x0: float, x1: float, y0: float, y1: float) -> bytes | None:
    """The coverage's pixels that meet [x0, x1] × [y0, y1], as GeoTIFF bytes (None: none)."""
    import math

    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.windows import Window, from_bounds

    with rasterio.open(path) as src:
        b = src.bounds
        x0, x1 = max(x0, b.left), min(x1, b.right)
        y0, y1 = max(y0, b.bottom), min(y1, b.top)
        if x0 >= x1 or y0 >= y1:
            return None
        w = from_bounds(x0, y0, x1, y1, src.transform)  # whole pixels that meet the area
        c0, r0 = math.floor(w.col_off + 1e-9), math.floor(w.row_off + 1e-9)
        c1 = math.ceil(w.col_off + w.width - 1e-9)
        r1 = math.ceil(w.row_off + w.height - 1e-9)
        window = Window(c0, r0, c1 - c0, r1 - r0)
        data = src.read(window=window)
        profile = {
            **src.profile,
            "height": data.shape[1],
            "width": data.shape[2],
            "transform": src.window_transform(window),
        }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        return mem.read()


class WCS(BaseHTTPRequestHandler):
    log: ClassVar[list[dict[str, Any]]] = []
    script: ClassVar[list[str]] = []
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, locator: str, text: str) -> None:
        self._send(status, exception_report(code, locator, text), "application/xml")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            if self.path == "/script":
                type(self).script = list(json.loads(body))
            elif self.path == "/reset":
                type(self).log, type(self).script = [], []
        self._send(200, b"{}", "application/json")

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/log":
            self._send(200, json.dumps(type(self).log).encode(), "application/json")
            return
        if parts.path != "/wcs":
            self._send(404, b"not found", "text/plain")
            return
        q = parse_qs(parts.query)
        with self.lock:
            type(self).log.append(
                {"query": parts.query, "if_none_match": self.headers.get("If-None-Match")}
            )
            mode = type(self).script.pop(0) if type(self).script else "ok"
        if mode == "503":
            self._send(503, b"busy", "text/plain", {"Retry-After": "0"})
        elif mode == "exception200":
            self._send(200, exception_report("NoApplicableCode", "", "Internal error"), "text/xml")
        elif mode == "html":
            self._send(200, b"<html><body>Service unavailable</body></html>", "text/html")
        elif mode == "png":
            self._send(200, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png")
        else:
            self._get_coverage({k.lower(): v for k, v in q.items()})

    def _get_coverage(self, q: dict[str, list[str]]) -> None:
        one = {k: v[0] for k, v in q.items()}
        if one.get("service") != "WCS" or one.get("request") != "GetCoverage":
            self._error(501, "OperationNotSupported", "request", "only GetCoverage")
            return
        if one.get("version") != "2.0.1":
            self._error(400, "InvalidParameterValue", "version", "version 2.0.1 only")
            return
        coverage = one.get("coverageid", "")
        if coverage not in COVERAGES:
            self._error(404, "NoSuchCoverage", "coverageId", f"no coverage {coverage}")
            return
        if one.get("format", "image/tiff") != "image/tiff":
            self._error(400, "InvalidParameterValue", "format", "image/tiff only")
            return
        for key in ("subsettingcrs", "outputcrs"):
            if one.get(key, CRS_URI) != CRS_URI:
                self._error(400, "SubsettingCrs-NotSupported", key, f"{one[key]} not offered")
                return
        bounds: dict[str, tuple[float, float]] = {}
        for s in q.get("subset", []):
            m = re.fullmatch(r"(\w+)\(([^,]+),([^,]+)\)", s)
            if m is None or m.group(1) not in ("x", "y"):
                self._error(404, "InvalidAxisLabel", "subset", f"no axis in {s!r} (x, y)")
                return
            bounds[m.group(1)] = (float(m.group(2)), float(m.group(3)))
        (x0, x1), (y0, y1) = bounds.get("x", (-1e12, 1e12)), bounds.get("y", (-1e12, 1e12))
        body = cut(COVERAGES[coverage], x0, x1, y0, y1)
        if body is None:
            self._error(404, "InvalidSubsetting", "subset", "the subset misses the coverage")
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", "image/tiff", {"ETag": etag})
            return
        self._send(200, body, "image/tiff", {"ETag": etag})


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), WCS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
