"""The check of a pulled height raster (``[sources.heights] ndsm_url`` …) before it is
published: GDAL (rasterio) opens it, it has a CRS and it is the pipeline's, and it holds
data (at least one band and pixel, not every pixel of a coarse read nodata). Each failure
is a one-line :class:`~mfa.errors.SnapshotCheckError` naming the source and the URL
(redacted); the download is then discarded and the last good snapshot stays ``latest``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mfa.errors import SnapshotCheckError

__all__ = ["check_raster"]

#: The side (pixels) of the coarse read that checks a raster holds data.
PEEK = 256


def check_raster(path: Path, what: str, url: str, crs: str) -> None:
    """Raise :class:`~mfa.errors.SnapshotCheckError` unless ``path`` is a raster in ``crs``
    with data. ``what`` names the source (``sources.heights.ndsm``), ``url`` is shown."""
    import rasterio
    from pyproj import CRS

    from mfa.crs import same_crs

    try:
        with rasterio.open(path) as src:
            shape, count, raster_crs = (src.height, src.width), src.count, src.crs
            data = None
            if count and shape[0] and shape[1]:
                out = (min(shape[0], PEEK), min(shape[1], PEEK))
                data = src.read(1, out_shape=out, masked=True)
    except (rasterio.errors.RasterioError, OSError) as exc:
        head = Path(path).read_bytes()[:64].lstrip().lower() if Path(path).is_file() else b""
        hint = " (an HTML page: the service's error page?)" if head.startswith(b"<") else ""
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise SnapshotCheckError(
            f"{what}: {url}: the download is not a raster GDAL can read{hint}: {reason}; "
            "check the url (a GeoTIFF/COG file), or try again later"
        ) from None
    if raster_crs is None:
        raise SnapshotCheckError(
            f"{what}: {url}: the raster has no CRS; publish it with one (gdal_edit.py -a_srs "
            f"{crs}) or point the url at one that has it"
        )
    if not same_crs(raster_crs, crs):
        shown = CRS.from_user_input(raster_crs).to_string()
        raise SnapshotCheckError(
            f"{what}: {url}: the raster is in {shown}, the pipeline in {crs}; heights are not "
            "resampled on the fly: point the url at a raster in the pipeline's CRS"
        )
    if data is None or bool(np.ma.getmaskarray(data).all()):
        raise SnapshotCheckError(
            f"{what}: {url}: the raster is empty ({shape[1]}×{shape[0]} pixels, {count} bands"
            f"{', all nodata' if data is not None else ''}); check the url"
        )
