"""Synthetic cities for scale tests: footprints in street blocks, BBR-like attributes.

Deterministic from the seed and vectorised (numpy/shapely), so millions of buildings take
seconds. Attributes are drawn from the empirical distributions of a real register
(``like``, the shipped BBR sample by default): use code, wall code, construction year,
floor count and the share of outbuildings without a registered floor area. A city is
written whole or not at all (a hidden folder beside the target, renamed into place), and
a folder mfa synth did not write is never replaced.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfa.errors import InputDataError
from mfa.failpoints import failpoint
from mfa.io.files import exchange_dirs, fsync_dir

__all__ = ["pipeline_text", "register_distributions", "synthetic_city", "write_synthetic_city"]

#: Changes whenever the same seed gives another city (caches of cities compare it).
CITY_VERSION = 2  # 2: district outlines with parish-like vertex counts
#: District outlines: vertices per side, and how far a side wanders from the straight line
#: (m; less than half a street, so no building changes district).
EDGE_VERTICES = 750
WIGGLE_M = 8.0
#: The file that marks a folder as a whole city of mfa synth (JSON: n, seed, version),
#: and the files such a city holds: only such a folder is ever replaced.
MARKER = ".mfa-synth.json"
CITY_FILES = frozenset({MARKER, "register.parquet", "districts.parquet", "pipeline.toml"})
#: Lattice cell (m), cells per block side, street width (m).
CELL_M, BLOCK_CELLS, STREET_M = 30.0, 8, 20.0


def register_distributions(register: pd.DataFrame) -> pd.DataFrame:
    """Joint empirical distribution of (use, wall, year, floors) of standing buildings."""
    b = register[register["status"].astype(str) == "6"]
    cols = [
        "byg021BygningensAnvendelse",
        "byg032YdervaeggensMateriale",
        "byg026Opfoerelsesaar",
        "byg054AntalEtager",
        "byg041BebyggetAreal",
        "byg038SamletBygningsareal",
    ]
    out = pd.DataFrame(b[cols]).reset_index(drop=True)
    # share of the registered floor area in footprint x floors (0 for outbuildings)
    floors = pd.to_numeric(out["byg054AntalEtager"], errors="coerce").fillna(0).clip(lower=1)
    foot = pd.to_numeric(out["byg041BebyggetAreal"], errors="coerce").fillna(0)
    gfa = pd.to_numeric(out["byg038SamletBygningsareal"], errors="coerce").fillna(0)
    out["gfa_ratio"] = np.where(foot > 0, gfa / (foot * floors), 0.0)
    return out


def _wiggly_squares(xs: np.ndarray, ys: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The polygons of the grid squares (dx, dy) between the grid lines ``xs``, ``ys`` (m),
    whose sides wander across the street they run along (at most ``WIGGLE_M`` either
    way), with ``EDGE_VERTICES`` per side: the thousands of vertices of a real parish
    outline (GEOS takes fast paths for plain rectangles that real districts never get).
    A side's offset is a function of the position along it, zero at the corners, and its
    vertices are computed the same way for both squares it borders: neighbours share the
    border exactly and cover the plane without gaps or overlaps."""
    k = np.arange(EDGE_VERTICES)
    t = k / EDGE_VERTICES  # along a side from its lower-left corner, corner included
    r = (EDGE_VERTICES - k) / EDGE_VERTICES  # the same positions, walked back (exact)
    f = WIGGLE_M * np.sin(np.pi * t) * np.sin(14 * np.pi * t)
    fr = WIGGLE_M * np.sin(np.pi * r) * np.sin(14 * np.pi * r)
    x0, x1 = xs[dx][:, None], xs[dx + 1][:, None]
    y0, y1 = ys[dy][:, None], ys[dy + 1][:, None]
    # counter-clockwise: bottom, right, top (walked back), left (walked back)
    x = np.hstack([x0 + t * (x1 - x0), x1 + f, x0 + r * (x1 - x0), x0 + fr])
    y = np.hstack([y0 + f, y0 + t * (y1 - y0), y1 + fr, y0 + r * (y1 - y0)])
    return shapely.polygons(np.stack([x, y], axis=-1))


def synthetic_city(
    n: int, seed: int, like: pd.DataFrame, crs: str = "EPSG:25832", origin=(600_000.0, 6_150_000.0)
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """``n`` buildings (BBR-schema register rows with footprint polygons) and districts.

    Buildings sit on a lattice of 30 m cells in blocks of 8 × 8 cells separated by 20 m
    streets; footprints are rectangles whose size and attributes come from a record of
    ``like`` (drawn with replacement). Districts are square groups of about 2,500
    buildings with parish-like outlines (thousands of vertices, sides wandering across the
    streets). Row order is shuffled so that inputs are not pre-sorted.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    rng = np.random.default_rng(seed)
    dist = register_distributions(like)
    pick = rng.integers(0, len(dist), n)
    rec = dist.iloc[pick].reset_index(drop=True)
    side_blocks = math.ceil(math.sqrt(n / BLOCK_CELLS**2))
    block_m = BLOCK_CELLS * CELL_M + STREET_M
    idx = np.arange(n)
    block, cell = divmod(idx, BLOCK_CELLS**2)
    bx, by = block % side_blocks, block // side_blocks
    cx, cy = cell % BLOCK_CELLS, cell // BLOCK_CELLS
    x0 = origin[0] + bx * block_m + cx * CELL_M
    y0 = origin[1] + by * block_m + cy * CELL_M
    foot = pd.to_numeric(rec["byg041BebyggetAreal"], errors="coerce").fillna(60).to_numpy(float)
    foot = np.clip(foot * rng.lognormal(0, 0.15, n), 10, (CELL_M - 4) ** 2)
    aspect = rng.uniform(1.0, 2.0, n)
    w = np.minimum(np.sqrt(foot * aspect), CELL_M - 4)
    h = np.minimum(foot / w, CELL_M - 4)
    jx, jy = rng.uniform(0, CELL_M - 2 - w), rng.uniform(0, CELL_M - 2 - h)
    boxes = shapely.box(x0 + 1 + jx, y0 + 1 + jy, x0 + 1 + jx + w, y0 + 1 + jy + h)
    floors = pd.to_numeric(rec["byg054AntalEtager"], errors="coerce").fillna(0).to_numpy()
    area = w * h
    gfa = np.round(area * np.maximum(floors, 1) * rec["gfa_ratio"].to_numpy(float))
    ids = [f"{seed:08x}-0000-4000-8000-{i:012x}" for i in range(n)]
    reg = gpd.GeoDataFrame(
        {
            "id_lokalId": ids,
            "status": "6",
            "byg021BygningensAnvendelse": rec["byg021BygningensAnvendelse"].to_numpy(),
            "byg026Opfoerelsesaar": pd.to_numeric(
                rec["byg026Opfoerelsesaar"], errors="coerce"
            ).to_numpy(),
            "byg032YdervaeggensMateriale": rec["byg032YdervaeggensMateriale"].to_numpy(),
            "byg038SamletBygningsareal": gfa,
            "byg041BebyggetAreal": np.round(area, 1),
            "byg054AntalEtager": floors.astype(float),
        },
        geometry=boxes,
        crs=crs,
    )
    # districts: squares of about 2,500 buildings (≈ 6 × 6 blocks), outlines like parishes'
    d_blocks = max(1, round(math.sqrt(2500 / BLOCK_CELLS**2)))
    d_side = math.ceil(side_blocks / d_blocks)
    dx, dy = np.meshgrid(np.arange(d_side), np.arange(d_side))
    dx, dy = dx.ravel(), dy.ravel()
    span = d_blocks * block_m
    xs = origin[0] + np.arange(d_side + 1) * span - STREET_M / 2  # grid lines (m)
    ys = origin[1] + np.arange(d_side + 1) * span - STREET_M / 2
    districts = gpd.GeoDataFrame(
        {
            "district_id": [f"D{i:05d}" for i in range(len(dx))],
            "name": [f"District {i}" for i in range(len(dx))],
        },
        geometry=_wiggly_squares(xs, ys, dx, dy),
        crs=crs,
    )
    order = rng.permutation(n)
    return reg.iloc[order].reset_index(drop=True), districts


#: The scenarios of ``pipelines/dk-sample.toml``, so a synthetic city runs the same job.
SCENARIOS = """
[[dynamics.scenarios]]
name = "baseline"

[[dynamics.scenarios]]
name = "longer-life"
lifetime_factor = 1.25

[[dynamics.scenarios]]
name = "new-housing"
construction_m2_per_year = 5000
construction_archetype = "RM-C"

[[dynamics.scenarios]]
name = "growth"
stock_growth_per_year = 0.005
"""


def pipeline_text(n: int, seed: int, config_dir: Path) -> str:
    """The ``pipeline.toml`` of the synthetic city of ``n`` buildings and ``seed``.

    The full job of ``pipelines/dk-sample.toml`` (Monte Carlo percentiles, a 100 m grid with
    rasters, flows under the same scenarios) with config paths made absolute, so ``mfa run``
    of it computes what users run on a real register.
    """
    cfg = Path(config_dir).resolve()
    return f"""# Synthetic city: {n:,} buildings, seed {seed} (mfa synth). Not real data.
name = "synth-{n}-{seed}"
crs = "EPSG:25832"

[sources.register]
path = "register.parquet"

[sources.districts]
path = "districts.parquet"
id_column = "district_id"
name_column = "name"

[archetypes]
dir = "{cfg / "archetypes"}"

[intensities]
table = "{cfg / "intensities" / "rasmi_2024.csv"}"
region = "OECD_EU15"
statistic = "p50"

[compute]
scheduler = "threads"
batch_rows = 100000

[uncertainty]
draws = 1000
seed = 42
percentiles = [5, 50, 95]

[grid]
cell_size_m = 100

[dynamics]
lifetimes = "{cfg / "lifetimes.toml"}"
base_year = 2020
horizon = 2035
{SCENARIOS}
[output]
dir = "outputs"
"""


def write_synthetic_city(
    n: int, seed: int, output: Path, like_file: Path, config_dir: Path
) -> Path:
    """Write ``register.parquet``, ``districts.parquet`` and ``pipeline.toml`` to ``output``,
    whole or not at all.

    The city is written into a hidden folder beside ``output`` (``.<name>.synth-*``) and
    renamed into place: a killed or failing write leaves ``output`` as it was. ``output``
    may be missing, empty or a city of mfa synth (only its files, :data:`MARKER` among
    them), which is replaced in one step; anything else is an
    :class:`~mfa.errors.InputDataError` and nothing is written. The pipeline is
    :func:`pipeline_text`.
    """
    output = Path(os.path.abspath(output))
    replace = _replaceable(output)
    like = pd.read_parquet(like_file)
    reg, districts = synthetic_city(n, seed, like)
    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(output)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.synth-", dir=output.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # a folder as mkdir makes it, not mkdtemp's 0700
        marker = json.dumps({"n": n, "seed": seed, "city_version": CITY_VERSION})
        (tmp / MARKER).write_text(marker + "\n")  # first: the folder is mfa's
        # row groups of 100k: units of parallel work and of bbox filtering for every reader
        reg.to_parquet(tmp / "register.parquet", write_covering_bbox=True, row_group_size=100_000)
        districts.to_parquet(tmp / "districts.parquet", write_covering_bbox=True)
        failpoint("synth:written")
        (tmp / "pipeline.toml").write_text(pipeline_text(n, seed, config_dir))
        for name in CITY_FILES:
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if not replace:
            os.rename(tmp, output)  # onto nothing or an empty folder
        elif exchange_dirs(tmp, output):
            shutil.rmtree(tmp)  # the old city, now at the hidden name
        else:  # two renames: a kill between them leaves both cities at hidden names
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.synth-", dir=output.parent))
            os.replace(output, old)
            os.rename(tmp, output)
            shutil.rmtree(old)
        fsync_dir(output.parent)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output / "pipeline.toml"


def _replaceable(output: Path) -> bool:
    """False when ``output`` is missing or an empty folder, True when it is a city of mfa
    synth; otherwise refused (a file, or a folder holding anything else)."""
    if output.is_symlink():  # renaming would replace the link, not the folder
        raise InputDataError(
            f"{output}: is a symbolic link; give the folder it points to "
            f"({os.path.realpath(output)}) or another --output"
        )
    if not output.exists():
        return False
    if not output.is_dir():
        raise InputDataError(
            f"{output}: is a file, not a folder; mfa synth writes a folder: choose another --output"
        )
    names = sorted(p.name for p in output.iterdir())
    if not names:
        return False
    if MARKER in names and set(names) <= CITY_FILES:
        return True
    others = [x for x in names if x not in CITY_FILES]
    shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
    what = "a city of mfa synth with other files in it" if MARKER in names else "not empty"
    raise InputDataError(
        f"{output}: {what} ({shown}) and mfa synth replaces only a folder it wrote whole; "
        "nothing was written: choose another --output, or move those files away"
    )


def _remove_leftovers(output: Path) -> None:
    """Remove the hidden folders of killed writes of a city at ``output`` (recognised by
    name and by holding only mfa synth's files); anything else beside it stays."""
    for folder in output.parent.glob(f".{output.name}.synth-*"):
        try:
            if folder.is_dir() and not folder.is_symlink():
                names = {p.name for p in folder.iterdir()}
                if names <= CITY_FILES and (MARKER in names or not names):
                    shutil.rmtree(folder)
        except OSError:
            continue
