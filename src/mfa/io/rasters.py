"""Per-footprint statistics of elevation rasters with windowed reads.

A raster is never read whole: footprints are taken in spatially coherent groups (Hilbert
order), and for each group only the window that covers it is read. Groups whose window
would exceed ``max_window_pixels`` are split, so memory is bounded by that number (a
single footprint larger than that is read on its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.windows import Window, from_bounds

from mfa.buildings.heights import zonal_percentile
from mfa.crs import same_crs
from mfa.errors import InputDataError, InputNotFoundError
from mfa.io.safeopen import open_raster

__all__ = ["RasterStats", "check_raster_total", "footprint_heights", "write_cog"]


@dataclass
class RasterStats:
    """What the windowed reader did, for the run manifest and for tests."""

    windows_read: int = 0
    max_window_pixels: int = 0
    pixels_read: int = 0
    raster_pixels: int = 0
    no_pixel_centre: int = 0
    files: list[str] = field(default_factory=list)


def _open(path: Path) -> rasterio.DatasetReader:
    if not Path(path).is_file():
        raise InputNotFoundError(f"{path}: raster not found; fix sources.heights")
    return open_raster(path, "sources.heights")


def _check_same_grid(a: rasterio.DatasetReader, b: rasterio.DatasetReader) -> None:
    if not same_crs(a.crs, b.crs) or a.transform != b.transform or a.shape != b.shape:
        raise InputDataError(
            f"{b.name}: DSM and DTM must share CRS, transform and size "
            f"({a.name}: {a.crs}, {a.shape}; {b.name}: {b.crs}, {b.shape}); resample one "
            "onto the other (e.g. gdalwarp -tr/-te) or give an nDSM"
        )


def _read(ds: rasterio.DatasetReader, window: Window) -> tuple[np.ndarray, np.ndarray]:
    data = ds.read(1, window=window, masked=True)
    values = np.asarray(data.filled(np.nan), dtype=float)
    return values, ~np.ma.getmaskarray(data) & np.isfinite(values)


def _read_checked(ds: rasterio.DatasetReader, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read`, with a damaged file (truncated, bad compression) as InputDataError."""
    try:
        return _read(ds, window)
    except rasterio.errors.RasterioError as exc:
        raise InputDataError(
            f"{ds.name}: cannot be read as a raster ({exc}); the file is damaged: replace it"
        ) from exc


def _groups(bounds: np.ndarray, ds: rasterio.DatasetReader, max_pixels: int) -> list[np.ndarray]:
    """Index groups (in the given order) whose covering window has at most max_pixels."""
    px = abs(ds.transform.a) * abs(ds.transform.e)
    out: list[np.ndarray] = []
    stack = [np.arange(len(bounds))]
    while stack:
        idx = stack.pop()
        b = bounds[idx]
        area = (b[:, 2].max() - b[:, 0].min()) * (b[:, 3].max() - b[:, 1].min())
        if area / px <= max_pixels or len(idx) == 1:
            out.append(idx)
        else:
            half = len(idx) // 2
            stack.extend([idx[half:], idx[:half]])
    return out


def footprint_heights(
    geometry: gpd.GeoSeries,
    ndsm: Path | None = None,
    dsm: Path | None = None,
    dtm: Path | None = None,
    percentile: float = 90.0,
    max_window_pixels: int = 4_000_000,
) -> tuple[pd.Series, RasterStats]:
    """Height above ground (m) per footprint: a percentile of the nDSM (or DSM − DTM).

    Cells count for a footprint when their centre lies inside it; a footprint too small to
    hold a cell centre uses the cells it touches. Nodata cells are ignored.

    Returns
    -------
    height_m, stats
        Heights aligned with ``geometry`` (<NA> where no valid cell), and what was read.
    """
    if (ndsm is None) == (dsm is None and dtm is None) or ((dsm is None) != (dtm is None)):
        raise InputDataError("give either an nDSM, or both a DSM and a DTM")
    main = _open(ndsm if ndsm is not None else dsm)  # type: ignore[arg-type]
    ground = _open(dtm) if dtm is not None else None
    stats = RasterStats(raster_pixels=main.width * main.height, files=[main.name])
    try:
        if ground is not None:
            _check_same_grid(main, ground)
            stats.files.append(ground.name)
        if main.crs is None:
            raise InputDataError(
                f"{main.name}: the raster has no CRS; assign one "
                "(gdal_edit.py -a_srs EPSG:... FILE)"
            )
        if geometry.crs is not None and not same_crs(geometry.crs, main.crs):
            raise InputDataError(
                f"{main.name}: the raster is in {main.crs}, the pipeline in "
                f"{CRS.from_user_input(geometry.crs).to_string()}; heights are not resampled "
                "on the fly: reproject it (gdalwarp -t_srs <pipeline CRS>)"
            )
        t = main.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise InputDataError(
                f"{main.name}: the raster's grid is rotated, sheared or flipped (geotransform "
                f"{t.a:g}, {t.b:g}, {t.d:g}, {t.e:g}); mfa reads north-up grids only: warp it "
                "(gdalwarp -t_srs <pipeline CRS> in.tif out.tif)"
            )
        geoms = geometry
        fb = geoms.total_bounds
        rb = main.bounds
        if len(geoms) and not (
            fb[0] <= rb.right and fb[2] >= rb.left and fb[1] <= rb.top and fb[3] >= rb.bottom
        ):
            raise InputDataError(
                f"{main.name}: the raster does not overlap the footprints (raster "
                f"{rb.left:.0f},{rb.bottom:.0f} … {rb.right:.0f},{rb.top:.0f}; footprints "
                f"{fb[0]:.0f},{fb[1]:.0f} … {fb[2]:.0f},{fb[3]:.0f}); check the file and its CRS"
            )
        result = np.full(len(geoms), np.nan)
        valid_geom = ~(geoms.isna() | geoms.is_empty).to_numpy()
        positions = np.flatnonzero(valid_geom)
        if len(positions):
            sub = geoms.iloc[positions]
            order = np.argsort(
                sub.hilbert_distance(total_bounds=sub.total_bounds).to_numpy(), kind="stable"
            )
            positions = positions[order]
            bounds = geoms.iloc[positions].bounds.to_numpy()
            full = Window(0, 0, main.width, main.height)
            for group in _groups(bounds, main, max_window_pixels):
                b = bounds[group]
                window = (
                    from_bounds(
                        b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max(), main.transform
                    )
                    .round_offsets(op="floor")
                    .round_lengths(op="ceil")
                )
                try:
                    window = window.intersection(full)
                except rasterio.errors.WindowError:
                    continue  # the group lies outside the raster
                values, ok = _read_checked(main, window)
                if ground is not None:
                    g_values, g_ok = _read_checked(ground, window)
                    values, ok = values - g_values, ok & g_ok
                stats.windows_read += 1
                stats.pixels_read += values.size
                stats.max_window_pixels = max(stats.max_window_pixels, values.size)
                transform = main.window_transform(window)
                shapes = list(
                    zip(geoms.iloc[positions[group]].values, range(len(group)), strict=True)
                )
                labels = rasterize(
                    shapes, out_shape=values.shape, transform=transform, fill=-1, dtype="int32"
                )
                pct, count = zonal_percentile(labels, values, ok, len(group), percentile)
                empty = np.flatnonzero(count == 0)
                if len(empty):
                    touched = rasterize(
                        [shapes[i] for i in empty],
                        out_shape=values.shape,
                        transform=transform,
                        fill=-1,
                        dtype="int32",
                        all_touched=True,
                    )
                    pct2, count2 = zonal_percentile(touched, values, ok, len(group), percentile)
                    pct[empty] = pct2[empty]
                    stats.no_pixel_centre += int((count2[empty] > 0).sum())
                result[positions[group]] = pct
    finally:
        main.close()
        if ground is not None:
            ground.close()
    if len(positions) and np.isnan(result).all():
        raise InputDataError(
            f"{stats.files[0]}: no valid (non-nodata) cell under any of the {len(positions)} "
            "footprints; the raster is all nodata there, or its nodata value is wrong: check "
            "it (gdalinfo -stats) or remove sources.heights"
        )
    height = pd.Series(result, index=geometry.index, dtype="Float64")
    return height.where(~np.isnan(result)), stats


def write_cog(
    path: Path,
    array: np.ndarray,
    west: float,
    north: float,
    cell_size: float,
    crs: object,
    description: str,
    unit: str,
) -> Path:
    """Write one band as a cloud-optimised GeoTIFF (deflate), atomically (temp + rename).

    GDAL makes the file in memory (``/vsimem``: the band once more, then the compressed
    COG) and Python writes its bytes: a full or read-only disk is then one ``OSError``
    naming the file (GDAL's GeoTIFF writer says only "Write failed" and prints libtiff's
    messages on stderr), and a failed write leaves no temporary behind.
    """
    import os

    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import from_origin

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    profile = {
        "driver": "GTiff",
        "width": array.shape[1],
        "height": array.shape[0],
        "count": 1,
        "dtype": "float32",
        "crs": crs,
        "transform": from_origin(west, north, cell_size, cell_size),
        "nodata": None,
    }
    with MemoryFile(ext=".tif") as plain, MemoryFile(ext=".tif") as cog:
        with plain.open(**profile) as dst:
            dst.write(array.astype("float32"), 1)
            dst.set_band_description(1, description)
            dst.update_tags(1, unit=unit)
        rio_copy(plain.name, cog.name, driver="COG", compress="DEFLATE")
        data = cog.read()
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_raster_total(path: Path, crs: str, expected_t: float, rtol: float) -> dict[str, object]:
    """Check a stock raster (t/ha): CRS, COG layout, and Σ density × cell area = the total."""

    from mfa.errors import ValidationError

    with rasterio.open(path) as src:
        if src.crs is None or not same_crs(src.crs, crs):
            raise ValidationError(f"{path}: CRS is {src.crs}, expected {crs}")
        cell_ha = abs(src.transform.a * src.transform.e) / 10_000.0
        total = float(src.read(1, masked=False).astype("float64").sum() * cell_ha)
        layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
    if layout != "COG":
        raise ValidationError(f"{path}: not a cloud-optimised GeoTIFF (layout {layout})")
    if not np.isclose(total, expected_t, rtol=rtol, atol=1e-6):
        raise ValidationError(f"{path}: cells sum to {total} t, the buildings to {expected_t} t")
    return {"total_t": total, "layout": layout}
