"""Time and peak RSS of conflation alone, one search vs tiles, on a synthetic city.

``python benchmarks/conflate_tiles.py N TILE_M`` (TILE_M 0 = one search). The register is
the synthetic city's records as points (point on surface; 10 % moved 15 m, so some fall in
streets or neighbours), the footprints its polygons with ids in another order. Prints
one line: n, tile, seconds, RSS before conflation and peak RSS during it (MB; the
peak is reset through ``/proc/self/clear_refs`` just before, Linux only).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.buildings.conflate import conflate
from mfa.synth import synthetic_city

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1e3


def main(n: int, tile_m: float) -> None:
    like = pd.read_parquet(ROOT / "geodata" / "sample" / "bbr_bygning_2020.parquet")
    city, _ = synthetic_city(n, 1, like)
    polys = city.geometry.values
    rng = np.random.default_rng(2)
    xy = shapely.get_coordinates(shapely.point_on_surface(polys))
    moved = rng.random(n) < 0.1
    xy[moved] += 15.0
    reg = gpd.GeoDataFrame(
        {
            "building_id": pd.array([f"r{i:08d}" for i in range(n)], dtype="string"),
            "footprint_area_m2": np.where(rng.random(n) < 0.5, np.nan, 100.0),
            "footprint_area_source": pd.array([None] * n, dtype="string"),
        },
        geometry=shapely.points(xy),
        crs=city.crs,
    )
    fps = gpd.GeoDataFrame(
        {
            "building_id": pd.array([f"f{(i * 7919) % n:08d}" for i in range(n)], dtype="string"),
            "footprint_area_m2": shapely.area(polys),
            "footprint_area_source": pd.array(["polygon"] * n, dtype="string"),
        },
        geometry=polys,
        crs=city.crs,
    )
    del city, like
    before = _rss_mb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    t0 = time.perf_counter()
    _out, report = conflate(reg, fps, tile_m=tile_m or None)
    dt = time.perf_counter() - t0
    peak = _hwm_mb()
    print(
        f"n={n} tile_m={tile_m:g} s={dt:.2f} rss_before_mb={before:.0f} peak_mb={peak:.0f} "
        f"matched_by_point={report['matched_by_point']}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
