"""The stock-only script an analyst writes: plain vectorised geopandas.

Read, filter, merge the lookup tables, footprint area × floors, representative point,
``sjoin`` to the districts, × intensity, ``groupby`` district, write two GeoParquet files.
Everything in memory in one process, one vectorised GEOS call per step over all buildings.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd

REGISTER_COLUMNS = [
    "id_lokalId",
    "status",
    "byg021BygningensAnvendelse",
    "byg032YdervaeggensMateriale",
    "byg038SamletBygningsareal",
    "byg054AntalEtager",
    "geometry",
]


def run(register: Path, districts: Path, lookups: Path, output: Path) -> None:
    """Compute the SPEC's stock-only job with geopandas; write the two GeoParquet outputs."""
    lookups, output = Path(lookups), Path(output)
    reg = gpd.read_parquet(register, columns=REGISTER_COLUMNS)
    dist = gpd.read_parquet(districts, columns=["district_id", "geometry"])
    use = pd.read_parquet(lookups / "use_function.parquet")
    wall = pd.read_parquet(lookups / "wall_structure.parquet")
    defaults = pd.read_parquet(lookups / "function_defaults.parquet")
    intensity = pd.read_parquet(lookups / "intensity.parquet")
    materials = [c for c in intensity.columns if c != "archetype_id"]

    # 1. standing buildings whose use code maps to a function
    b = reg[reg["status"] == "6"]
    b = b.merge(use, left_on="byg021BygningensAnvendelse", right_on="code", how="inner")
    b = b.drop(columns="code").merge(defaults, on="function", how="left")
    # 2.-4. footprint area × floors, unless the register has the floor area
    floors = b["byg054AntalEtager"].where(b["byg054AntalEtager"] > 0, b["default_floors"])
    gfa = b["byg038SamletBygningsareal"]
    b["gfa_m2"] = gfa.where(gfa > 0, b.area * floors)
    # 5. structure and archetype
    b = b.merge(wall, left_on="byg032YdervaeggensMateriale", right_on="code", how="left")
    b["structure"] = b["structure"].fillna(b["default_structure"])
    b["archetype_id"] = b["function"] + "-" + b["structure"]
    # 6. material masses
    b = b.merge(intensity, on="archetype_id", how="left")
    mass_cols = [f"{m}_t" for m in materials]
    for m in materials:
        b[f"{m}_t"] = b["gfa_m2"] * b[m] / 1000
    b["mass_t"] = b[mass_cols].sum(axis=1)
    # 7. district of the representative point (GEOS PointOnSurface)
    pts = gpd.GeoDataFrame(geometry=b.representative_point(), crs=b.crs)
    joined = gpd.sjoin(pts, dist, how="left", predicate="within")
    b["district_id"] = joined.loc[~joined.index.duplicated(), "district_id"]

    buildings = b.rename(columns={"id_lokalId": "building_id"})[
        ["building_id", "district_id", "archetype_id", "gfa_m2", *mass_cols, "mass_t", "geometry"]
    ]
    output.mkdir(parents=True, exist_ok=True)
    buildings.to_parquet(output / "buildings.parquet")

    # 8. district sums (every district, zeros where no building)
    sums = buildings.groupby("district_id").agg(
        n_buildings=("building_id", "size"),
        gfa_m2=("gfa_m2", "sum"),
        **{c: (c, "sum") for c in [*mass_cols, "mass_t"]},
    )
    out = dist.merge(sums, left_on="district_id", right_index=True, how="left")
    value_cols = ["n_buildings", "gfa_m2", *mass_cols, "mass_t"]
    out[value_cols] = out[value_cols].fillna(0)
    out["n_buildings"] = out["n_buildings"].astype("int64")
    out[["district_id", *value_cols, "geometry"]].to_parquet(output / "districts.parquet")
