"""Loopback stand-ins for the services a pull talks to, serving the repository's sample data.

- ``/files/<name>``: a plain file from ``geodata/sample`` with ``ETag`` / ``Last-Modified``
  and ``304 Not Modified`` on a matching ``If-None-Match`` / ``If-Modified-Since``;
  ``Range: bytes=<n>-`` with ``If-Range`` answered ``206`` (unless ``ranges`` is off);
- ``/ogc/collections/<c>/items``: OGC API – Features pages as GeoJSON (``pand``: the Delft
  BGT footprints, ``delft_bgt_pand.gpkg``, EPSG:28992, unless ``collections`` holds
  another; any other collection from ``collections``): ``limit``, an opaque ``cursor`` in
  the ``rel=next`` link, ``numberMatched``/``numberReturned``, ``Content-Crs`` when ``crs``
  asks for EPSG:28992, an ``ETag`` per page, ``sortby=[-]field`` (Part 5);
- ``POST /graphql/BBR/v2``: Datafordeler GraphQL, ``BBR_Bygning`` from ``records`` (``where``
  with ``eq`` and ``in``), ``BBR_Events`` from ``events`` (``entityname`` ``eq``,
  ``datafordelerOpdateringstid`` ``gt``);
- ``/FileDownloads/v2.0/GetAvailableFileDownloads`` and ``/FileDownloads/v1.0/GetFile``:
  Datafordeler file downloads, the listing and the zips of ``downloads`` (file name →
  (listing row, bytes)); the key in ``apiKey``;
- ``/wfs``: WFS 2.0 GetFeature (``typeNames=pand``) as GeoJSON, paged by ``startIndex`` /
  ``count`` in ``sortBy`` order, with a ``crs`` member for ``srsName=EPSG:28992``, no ETag.

``script`` makes the next matching requests misbehave, in order: ``503`` (with
``Retry-After: 1``), ``429``, ``drop`` (headers and half the body, then the connection is
closed), ``cut`` (``/files/``: the file's own headers and the first half of its body,
then the connection is closed), ``html`` (an HTML error page with status 200), ``401``.
``key`` makes every request need ``X-Api-Key``. Requests are logged (path and headers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "geodata" / "sample"
EPSG_28992 = "http://www.opengis.net/def/crs/EPSG/0/28992"


def delft_features() -> list[dict[str, Any]]:
    """The Delft BGT footprints as GeoJSON features (id = BAG pand id), in file order."""
    import geopandas as gpd

    g = gpd.read_file(SAMPLE / "delft_bgt_pand.gpkg", layer="pand")
    g = g[["identificatiebagpnd", "bgt_status", "geometry"]]
    features = json.loads(g.to_json(drop_id=True))["features"]
    for f, pid in zip(features, g["identificatiebagpnd"], strict=True):
        f["id"] = pid
    return features


class Services(BaseHTTPRequestHandler):
    features: ClassVar[list[dict[str, Any]]] = []
    files: ClassVar[dict[str, bytes]] = {}
    script: ClassVar[list[str]] = []
    server: ClassVar[Any] = None  # the running server (pull_helpers.service sets it)
    log: ClassVar[list[tuple[str, dict[str, str]]]] = []
    key: ClassVar[str | None] = None
    #: register records (Datafordeler field names, values as text or None) for GraphQL
    records: ClassVar[list[dict[str, str | None]]] = []
    #: a total that differs from the features served (a server that lost pages)
    claimed_total: ClassVar[int | None] = None
    #: Datafordeler events (BBR_Events nodes) and file downloads (name → (row, zip bytes))
    events: ClassVar[list[dict[str, Any]]] = []
    downloads: ClassVar[dict[str, tuple[dict[str, Any], bytes]]] = {}
    #: a server that does not know ``sortby`` (answers in storage order)
    ignore_sortby: ClassVar[bool] = False
    #: file bodies: ``Range`` honoured (206), and sent without ``Content-Length``
    ranges: ClassVar[bool] = True
    no_length: ClassVar[bool] = False
    #: OGC API collections by id (``pand`` falls back to ``features``)
    collections: ClassVar[dict[str, list[dict[str, Any]]]] = {}

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _misbehave(self, key_header: bool = True) -> bool:
        cls = type(self)
        if key_header and cls.key is not None and self.headers.get("X-Api-Key") != cls.key:
            self._send(401, b'{"error": "invalid key"}', {"Content-Type": "application/json"})
            return True
        if not cls.script or cls.script[0] == "cut":  # cut: answered by _file
            return False
        mode = cls.script.pop(0)
        if mode == "ok":
            return False
        if mode in ("503", "429"):
            self._send(int(mode), b"busy", {"Retry-After": "1", "Content-Type": "text/plain"})
        elif mode == "401":
            self._send(401, b"expired", {"Content-Type": "text/plain"})
        elif mode == "html":
            self._send(
                200, b"<html><body>Service unavailable</body></html>", {"Content-Type": "text/html"}
            )
        elif mode == "drop":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
        else:
            raise ValueError(f"unknown stand-in mode {mode!r}")
        return True

    def do_GET(self) -> None:
        cls = type(self)
        cls.log.append((self.path, dict(self.headers)))
        parts = urlsplit(self.path)
        if parts.path.startswith("/FileDownloads/"):
            self._file_downloads(parts.path, parse_qs(parts.query))
            return
        if self._misbehave():
            return
        if parts.path.startswith("/files/"):
            self._file(parts.path.removeprefix("/files/"))
        elif re.fullmatch(r"/ogc/collections/\w+/items", parts.path):
            self._items(parse_qs(parts.query), parts.path.split("/")[3])
        elif parts.path == "/wfs":
            self._wfs({k.lower(): v[0] for k, v in parse_qs(parts.query).items()})
        else:
            self._send(404, b"not found", {"Content-Type": "text/plain"})

    def do_POST(self) -> None:
        """Datafordeler GraphQL (``/graphql/BBR/v2``): ``BBR_Bygning`` nodes from a register
        CSV, ``where: { kommunekode: { eq } }``, cursor paging with ``pageInfo``; the key
        in the ``apiKey`` query parameter; problems as ``errors`` (status 200)."""
        cls = type(self)
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        cls.log.append((self.path, dict(self.headers)))
        parts = urlsplit(self.path)
        q = parse_qs(parts.query)
        if cls.key is not None and q.get("apiKey", [None])[0] != cls.key:
            self._send(401, b'{"error": "invalid apiKey"}', {"Content-Type": "application/json"})
            return
        if self._misbehave(key_header=False):
            return
        if parts.path != "/graphql/BBR/v2":
            self._send(404, b"not found", {"Content-Type": "text/plain"})
            return
        req = json.loads(body)
        query, variables = req["query"], req.get("variables") or {}
        entity = re.search(r"\{\s*(\w+)\(", query)
        if entity is not None and entity.group(1) == "BBR_Events":
            self._events(query, variables)
            return
        if entity is None or entity.group(1) != "BBR_Bygning":
            doc: dict[str, Any] = {"errors": [{"message": "The field does not exist"}]}
            self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
            return
        fields = re.search(r"nodes\s*\{([^}]*)\}", query).group(1).split()  # type: ignore[union-attr]
        where = dict(re.findall(r'(\w+): \{ eq: "([^"]*)" \}', query))
        among = {
            k: set(json.loads(v)) for k, v in re.findall(r"(\w+): \{ in: (\[[^\]]*\]) \}", query)
        }
        rows = [
            r
            for r in cls.records
            if all(r.get(k) == v for k, v in where.items())
            and all(r.get(k) in v for k, v in among.items())
        ]
        unknown = [f for f in fields if rows and f not in rows[0]]
        if unknown:
            doc = {"errors": [{"message": f"The field `{unknown[0]}` does not exist"}]}
            self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
            return
        after = variables.get("after")
        start = int(base64.urlsafe_b64decode(after).decode()) if after else 0
        first = int(variables["first"])
        page = [{f: r[f] for f in fields} for r in rows[start : start + first]]
        more = start + first < len(rows)
        cursor = base64.urlsafe_b64encode(str(start + first).encode()).decode()
        doc = {
            "data": {
                "BBR_Bygning": {
                    "pageInfo": {"hasNextPage": more, "endCursor": cursor if more else None},
                    "nodes": page,
                }
            }
        }
        self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def _page(self, rows: list[dict[str, Any]], variables: dict[str, Any]) -> dict[str, Any]:
        after = variables.get("after")
        start = int(base64.urlsafe_b64decode(after).decode()) if after else 0
        first = int(variables["first"])
        more = start + first < len(rows)
        cursor = base64.urlsafe_b64encode(str(start + first).encode()).decode()
        return {
            "pageInfo": {"hasNextPage": more, "endCursor": cursor if more else None},
            "nodes": rows[start : start + first],
        }

    def _events(self, query: str, variables: dict[str, Any]) -> None:
        """``BBR_Events`` nodes: ``where`` on ``entityname`` (eq) and
        ``datafordelerOpdateringstid`` (gt, compared as times)."""
        from datetime import datetime

        entity = re.search(r'entityname: \{ eq: "([^"]*)" \}', query)
        since = re.search(r'datafordelerOpdateringstid: \{ gt: "([^"]*)" \}', query)
        fields = re.search(r"nodes\s*\{([^}]*)\}", query).group(1).split()  # type: ignore[union-attr]

        def when(text: str) -> datetime:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))

        rows = [
            {f: e.get(f) for f in fields}
            for e in type(self).events
            if (entity is None or e["entityname"] == entity.group(1))
            and (since is None or when(e["datafordelerOpdateringstid"]) > when(since.group(1)))
        ]
        doc = {"data": {"BBR_Events": self._page(rows, variables)}}
        self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def _file_downloads(self, path: str, q: dict[str, list[str]]) -> None:
        cls = type(self)
        if cls.key is not None and q.get("apiKey", [None])[0] != cls.key:
            self._send(401, b'{"error": "invalid apiKey"}', {"Content-Type": "application/json"})
            return
        if self._misbehave(key_header=False):
            return
        if path == "/FileDownloads/v2.0/GetAvailableFileDownloads":
            register, entity = q.get("Register", [""])[0], q.get("Entity", [None])[0]
            rows = [
                meta
                for meta, _ in cls.downloads.values()
                if meta["register"] == register and entity in (None, meta["entityName"])
            ]
            doc = {
                "paginationMetadata": {"currentPage": 1, "totalPages": 1, "totalCount": len(rows)},
                "availableFileDownloads": rows,
            }
            self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
        elif path == "/FileDownloads/v1.0/GetFile":
            found = cls.downloads.get(q.get("Filename", [""])[0])
            if found is None:
                self._send(404, b"no such file", {"Content-Type": "text/plain"})
                return
            etag = '"' + hashlib.md5(found[1], usedforsecurity=False).hexdigest() + '"'
            self._body(found[1], {"Content-Type": "application/zip", "ETag": etag})
        else:
            self._send(404, b"not found", {"Content-Type": "text/plain"})

    def _file(self, name: str) -> None:
        body = type(self).files.get(name)
        if body is None:
            self._send(404, b"not found", {"Content-Type": "text/plain"})
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", {"ETag": etag})
            return
        if type(self).script[:1] == ["cut"]:  # the real file's headers, half its body
            type(self).script.pop(0)
            self.send_response(200)
            for k, v in {"ETag": etag, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._body(
            body,
            {
                "ETag": etag,
                "Last-Modified": formatdate(1_700_000_000, usegmt=True),
                "Content-Type": "application/octet-stream",
            },
        )

    def _body(self, body: bytes, headers: dict[str, str]) -> None:
        """A file body: ``206`` for ``Range: bytes=<n>-`` when ``If-Range`` is absent or
        equals the ``ETag`` (RFC 9110 §14.2, §13.1.5) and ``ranges`` is on, else ``200``;
        with ``no_length`` no ``Content-Length`` (the body ends when the connection does)."""
        cls = type(self)
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if cls.ranges and m and (if_range is None or if_range == headers.get("ETag")):
            start = int(m.group(1))
            if start >= len(body):
                self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            headers = {**headers, "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            self._send(206, body[start:], headers)
            return
        if cls.ranges:
            headers = {**headers, "Accept-Ranges": "bytes"}
        if cls.no_length:
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        self._send(200, body, headers)

    def _items(self, q: dict[str, list[str]], name: str) -> None:
        cls = type(self)
        if name not in cls.collections and name != "pand":
            self._send(
                404, b'{"detail": "no such collection"}', {"Content-Type": "application/json"}
            )
            return
        features = cls.collections.get(name, cls.features)
        sortby = q.get("sortby", [""])[0]
        if sortby and not cls.ignore_sortby:  # OGC API Part 5 sorting, "-" descending
            key = sortby.lstrip("+-")
            features = sorted(
                features, key=lambda f: str(f["properties"].get(key)), reverse=sortby[0] == "-"
            )
        limit = int(q.get("limit", ["10"])[0])
        cursor = q.get("cursor", [None])[0]
        offset = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
        page = features[offset : offset + limit]
        host = f"http://{self.headers['Host']}"
        keep = {k: v[0] for k, v in q.items() if k not in ("cursor",)}
        links = [{"rel": "self", "type": "application/geo+json", "href": host + self.path}]
        if offset + limit < len(features):
            nxt = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
            query = "&".join(f"{k}={v}" for k, v in keep.items()) + f"&cursor={nxt}"
            links.append(
                {
                    "rel": "next",
                    "type": "application/geo+json",
                    "href": f"{host}/ogc/collections/{name}/items?{query}",
                }
            )
        doc = {
            "type": "FeatureCollection",
            "numberMatched": cls.claimed_total or len(features),
            "numberReturned": len(page),
            "features": page,
            "links": links,
        }
        body = json.dumps(doc).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", {"ETag": etag})
            return
        headers = {"Content-Type": "application/geo+json", "ETag": etag}
        if q.get("crs", [None])[0] == EPSG_28992:
            headers["Content-Crs"] = f"<{EPSG_28992}>"
        self._send(200, body, headers)

    def _wfs(self, q: dict[str, str]) -> None:
        """WFS 2.0 GetFeature as GeoJSON, sorted by ``sortBy``; no ETag (as GeoServer)."""
        cls = type(self)
        if q.get("request") != "GetFeature" or q.get("typenames") != "pand":
            self._send(400, b"bad request", {"Content-Type": "text/plain"})
            return
        key, _, order = q.get("sortby", "").partition(" ")
        if not key:
            self._send(400, b"paging needs sortBy", {"Content-Type": "text/plain"})
            return
        ordered = sorted(
            cls.features, key=lambda f: f["properties"][key], reverse=order.upper() == "DESC"
        )
        start, count = int(q["startindex"]), int(q["count"])
        page = ordered[start : start + count]
        doc: dict[str, Any] = {
            "type": "FeatureCollection",
            "numberMatched": len(ordered),
            "numberReturned": len(page),
            "features": page,
        }
        if q.get("srsname") == "EPSG:28992":
            doc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::28992"}}
        self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-body (killed, or refusing a file over its bound) is
        what some tests do: not worth a traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def start() -> tuple[ThreadingHTTPServer, str]:
    """Start the stand-in on a free loopback port; return the server and its base URL."""
    server = _Server(("127.0.0.1", 0), Services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
