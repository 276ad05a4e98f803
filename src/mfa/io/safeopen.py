"""Open input files as data, never as programs.

GDAL picks a driver by what a file contains, not by its name: an OGR VRT (XML) saved as
``districts.gpkg`` reads any file it names (``/etc/passwd``) or a URL, and a GeoTIFF's
``.aux.xml`` sidecar can replace its georeferencing. Every vector and raster input of mfa
is therefore opened here, and only

- with the one driver its extension allows (:data:`VECTOR_DRIVERS`, :data:`RASTER_DRIVERS`),
  after its first bytes were checked against that format's signature (:data:`SIGNATURES`),
  and the driver GDAL then reports is checked again;
- with GDAL's network and side-file access switched off (:data:`GDAL_SAFE_OPTIONS`), so
  the bytes hashed into ``run.json`` are the bytes read (a Shapefile's own sidecars,
  ``.shx``/``.dbf``/``.prj``/``.cpg``, are hashed with it: :func:`mfa.io.files.read_together`).

Text inputs (CSV) are sniffed before parsing: NUL bytes mean a binary file (or a disk
image, or ``/dev/zero`` copied to a file), not a table (:func:`check_text_file`).
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mfa.errors import InputDataError

__all__ = [
    "GDAL_SAFE_OPTIONS",
    "RASTER_DRIVERS",
    "SIGNATURES",
    "VECTOR_DRIVERS",
    "check_text_file",
    "gdal_safe",
    "iter_vector",
    "open_raster",
    "read_vector",
    "vector_info",
    "vrt_sources",
]

#: Extension → the only OGR driver that may open a vector input with it.
VECTOR_DRIVERS = {
    ".gpkg": "GPKG",
    ".fgb": "FlatGeobuf",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
}

#: Extension → the only GDAL raster driver that may open a raster input with it. A VRT
#: (tiles of a national elevation model) may only name local GeoTIFFs (:func:`vrt_sources`).
RASTER_DRIVERS = {".tif": "GTiff", ".tiff": "GTiff", ".vrt": "VRT"}

#: Driver → the byte strings a file of that format starts with (GeoJSON: see _looks_json).
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "GPKG": (b"SQLite format 3\x00",),
    "FlatGeobuf": (b"fgb\x03",),
    "ESRI Shapefile": (b"\x00\x00\x27\x0a",),
    "GTiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
}

#: GDAL configuration for reading inputs: no HTTP, no /vsicurl/, no sidecar files
#: (.aux.xml, .ovr, .msk, world files) beside the one opened, no Python in VRTs.
GDAL_SAFE_OPTIONS: dict[str, str] = {
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".mfa-no-network",
    "GDAL_HTTP_TIMEOUT": "1",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_HTTP_PROXY": "127.0.0.1:9",
    "GDAL_PAM_ENABLED": "NO",
    "GDAL_VRT_ENABLE_PYTHON": "NO",
    "OGR_SQLITE_ALLOW_EXTERNAL_ACCESS": "NO",
}

_SNIFF_BYTES = 1 << 16
_CONVERT = {False: "e.g. ogr2ogr -f GPKG out.gpkg in", True: "e.g. gdal_translate -of GTiff"}


def _head(path: Path, n: int = _SNIFF_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _looks_json(head: bytes) -> bool:
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{"


def _what_it_is(head: bytes) -> str:
    """A guess at what a file really is, for the message."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text[:1] == b"<":
        return "XML (a GDAL VRT or other XML)" if b"OGRVRT" in text or b"VRT" in text else "XML"
    if text[:1] == b"{":
        return "JSON"
    for driver, sigs in SIGNATURES.items():
        if head.startswith(sigs):
            return f"a {driver} file"
    if b"\x00" in head[:4096]:
        return "binary data of an unknown format"
    return "text"


def _expect(path: Path, role: str, key: str, table: dict[str, str]) -> str:
    suffix = path.suffix.lower()
    driver = table.get(suffix)
    if driver is None:
        allowed = ", ".join(sorted(table))
        raise InputDataError(
            f"{path}: extension {suffix or '(none)'!r} is not one mfa reads as a {role} "
            f"(allowed: {allowed}); convert it ({_CONVERT[table is RASTER_DRIVERS]}) and fix {key}"
        )
    head = _head(path)
    if driver == "VRT":
        ok = head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<VRTDataset")
    elif driver == "GeoJSON":
        ok = _looks_json(head)
    else:
        ok = head.startswith(SIGNATURES[driver])
    if not ok:
        raise InputDataError(
            f"{path}: named {suffix} but its content is {_what_it_is(head)}, not {driver}; "
            f"mfa opens a {role} only as what its name says: replace the file or fix {key}"
        )
    if driver == "VRT":
        vrt_sources(path)  # only local GeoTIFFs
    return driver


_VRT_REFERENCES = ("SourceFilename", "SourceDataset")


def vrt_sources(path: Path) -> list[Path]:
    """The files a raster VRT reads; each must be a local GeoTIFF (no URL, no /vsi…
    path, no other driver's 'DRIVER:' syntax, no nested VRT). Else InputDataError."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputDataError(f"{path}: not a valid VRT ({exc}); replace it") from None
    out: list[Path] = []
    for element in root.iter():
        if element.tag not in _VRT_REFERENCES:
            continue
        text = (element.text or "").strip()
        if text.startswith("/vsi") or "://" in text or ":" in text.split("/")[0]:
            raise InputDataError(
                f"{path}: the VRT reads {text!r}, not a local file; mfa reads only local "
                "GeoTIFF tiles through a VRT: download them and point the VRT at them"
            )
        relative = element.get("relativeToVRT", "0") == "1" or not Path(text).is_absolute()
        source = path.parent / text if relative else Path(text)
        if source.suffix.lower() not in (".tif", ".tiff") or not source.is_file():
            raise InputDataError(
                f"{path}: the VRT reads {text!r}, which is not a GeoTIFF file beside it "
                "(mfa reads only local .tif tiles through a VRT); fix the VRT"
            )
        if not _head(source, 4).startswith(SIGNATURES["GTiff"]):
            raise InputDataError(f"{source}: named .tif (in {path.name}) but is not a GeoTIFF")
        out.append(source)
    return sorted(set(out))


@contextlib.contextmanager
def gdal_safe() -> Iterator[None]:
    """GDAL configured by :data:`GDAL_SAFE_OPTIONS` for the calls inside (pyogrio, rasterio)."""
    import pyogrio
    import rasterio

    previous = pyogrio.get_gdal_config_option
    saved = {k: previous(k) for k in GDAL_SAFE_OPTIONS}
    pyogrio.set_gdal_config_options(GDAL_SAFE_OPTIONS)
    try:
        with rasterio.Env(**GDAL_SAFE_OPTIONS, GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
            yield
    finally:
        pyogrio.set_gdal_config_options(saved)


def _gdal_reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def vector_info(path: Path, layer: str | None, role: str, key: str) -> dict[str, Any]:
    """pyogrio's metadata of a vector input (``crs``, ``geometry_type``, ``features``...),
    read with the driver its extension allows; nothing of the features is read.

    Raises InputDataError as :func:`read_vector`.
    """
    import pyogrio

    path = Path(path)
    driver = _expect(path, role, key, VECTOR_DRIVERS)
    with gdal_safe():
        try:
            info = pyogrio.read_info(path, layer=layer)
        except Exception as exc:  # pyogrio raises its own DataSourceError / DataLayerError
            raise InputDataError(
                f"{path}: cannot be read as a {driver} {role} ({_gdal_reason(exc)}); "
                f"replace the file or fix {key}"
            ) from exc
    _same_driver(path, info["driver"], driver, key)
    return info


def _same_driver(path: Path, found: str, driver: str, key: str) -> None:
    """GDAL opens a file by its content: the driver it chose must be the one the file's
    extension allows (an OGR VRT named .gpkg is refused)."""
    if found != driver:
        raise InputDataError(
            f"{path}: GDAL reads it with the {found} driver, not {driver}; "
            f"replace the file or fix {key}"
        )


def read_vector(
    path: Path,
    layer: str | None,
    role: str,
    key: str,
    bbox: tuple[float, float, float, float] | None = None,
) -> Any:
    """Read a vector input as a GeoDataFrame with the driver its extension allows
    (``bbox``: only the features that meet it, in the file's CRS).

    Raises InputDataError when the content is not that format, GDAL would use another
    driver, or the file cannot be read.
    """
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    driver = _expect(path, role, key, VECTOR_DRIVERS)
    with gdal_safe():
        try:
            _same_driver(path, pyogrio.read_info(path, layer=layer)["driver"], driver, key)
            return gpd.read_file(path, layer=layer, engine="pyogrio", bbox=bbox)
        except InputDataError:
            raise
        except Exception as exc:  # pyogrio raises its own DataSourceError / DataLayerError
            raise _unreadable(path, driver, role, exc) from exc


def _unreadable(path: Path, driver: str, role: str, exc: Exception) -> InputDataError:
    return InputDataError(f"{path}: cannot be read as a {driver} {role} ({_gdal_reason(exc)})")


def iter_vector(
    path: Path, layer: str | None, role: str, key: str, batch_rows: int
) -> Iterator[Any]:
    """A vector input in GeoDataFrames of at most ``batch_rows`` features, in file order,
    opened as :func:`read_vector` opens it (each read with :data:`GDAL_SAFE_OPTIONS`);
    the index of a batch is its features' positions in the file. Streamed through
    ``pyogrio.open_arrow`` (GDAL's GeoJSON driver parses a large file as a stream):
    one batch is in memory, not the layer. At least one batch (empty for an empty layer).
    """
    import geopandas as gpd
    import pandas as pd
    import pyogrio
    import shapely

    path = Path(path)
    driver = _expect(path, role, key, VECTOR_DRIVERS)
    with contextlib.ExitStack() as stack:
        with gdal_safe():
            try:
                _same_driver(path, pyogrio.read_info(path, layer=layer)["driver"], driver, key)
                meta, reader = stack.enter_context(
                    pyogrio.open_arrow(path, layer=layer, batch_size=batch_rows, use_pyarrow=True)
                )
            except InputDataError:
                raise
            except Exception as exc:  # pyogrio's DataSourceError / DataLayerError
                raise _unreadable(path, driver, role, exc) from exc
        name = meta.get("geometry_name") or "wkb_geometry"
        batches = iter(reader)
        done = 0
        while True:
            with gdal_safe():
                try:
                    batch = next(batches, None)
                except Exception as exc:  # a damaged feature, cut-off JSON
                    raise _unreadable(path, driver, role, exc) from exc
            if batch is None and done:
                return
            if batch is None:  # an empty layer: its (empty) columns, once
                batch = reader.schema.empty_table()
            frame = batch.drop_columns([name]).to_pandas()
            frame.index = pd.RangeIndex(done, done + len(frame))
            geometry = shapely.from_wkb(batch.column(name).to_numpy(zero_copy_only=False))
            yield gpd.GeoDataFrame(frame, geometry=geometry, crs=meta.get("crs"))
            done += len(frame)
            if not done:
                return


def open_raster(path: Path, key: str = "sources.heights") -> Any:
    """Open a raster input with the driver its extension allows, no sidecars, no network.

    The caller closes it. Raises InputDataError as :func:`read_vector`.
    """
    import rasterio

    path = Path(path)
    driver = _expect(path, "raster", key, RASTER_DRIVERS)
    try:
        with gdal_safe():
            ds = rasterio.open(path, driver=driver)  # GDAL's allowed drivers: this one
    except rasterio.errors.RasterioIOError as exc:
        raise InputDataError(f"{path}: cannot be read as a raster ({exc})") from exc
    if ds.driver != driver:
        ds.close()
        raise InputDataError(f"{path}: GDAL reads it as {ds.driver}, not {driver}; replace it")
    return ds


def check_text_file(path: Path, role: str, key: str) -> None:
    """Refuse a text input (CSV, optionally gzipped) whose first 64 KiB hold NUL bytes."""
    path = Path(path)
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                head = f.read(_SNIFF_BYTES)
        else:
            head = _head(path)
    except (OSError, EOFError) as exc:
        raise InputDataError(f"{path}: cannot be read as gzip ({exc}); replace it") from exc
    if b"\x00" in head:
        at = head.index(b"\x00")
        raise InputDataError(
            f"{path}: NUL byte at position {at}: {_what_it_is(head)}, not a {role} "
            f"(text); replace it with the CSV export or fix {key}"
        )


def check_csv_header(path: Path, sep: str, role: str) -> None:
    """Refuse a CSV file whose header names a column twice (pandas would read the first
    and rename the second ``name.1``: the file's author meant one of them)."""
    import csv
    import io

    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        first = f.readline(1 << 20)
    names = next(csv.reader(io.StringIO(first.decode("utf-8-sig", "replace")), delimiter=sep), [])
    names = [n.strip() for n in names]
    seen: set[str] = set()
    for i, name in enumerate(names, start=1):
        if name in seen and name:
            raise InputDataError(
                f"{path} line 1: column {name!r} occurs twice (again as column {i}) in the "
                f"{role}'s header; delete or rename one of them"
            )
        seen.add(name)
