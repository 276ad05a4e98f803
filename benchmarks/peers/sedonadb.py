"""SedonaDB (Apache Sedona's single-node engine on DataFusion): the same SQL pipeline.

Inputs are registered as views with ``read_parquet(...).to_view``; the result is
materialised once (``to_memtable``) and written with ``to_parquet``, then the district
sums are computed from it. Identifiers with capitals are quoted (DataFusion folds
unquoted ones to lower case). SedonaDB keeps the register's CRS in its geometry type and
writes it to the ``geo`` metadata.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import sedonadb


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run(register: Path, districts: Path, lookups: Path, output: Path) -> None:
    """Compute the SPEC's stock-only job in SedonaDB; write the two GeoParquet outputs."""
    lookups, output = Path(lookups), Path(output)
    output.mkdir(parents=True, exist_ok=True)
    materials = [
        n for n in pq.read_schema(lookups / "intensity.parquet").names if n != "archetype_id"
    ]
    mass = ",\n".join(f"s.gfa_m2 * i.{_ident(m)} / 1000 AS {_ident(m + '_t')}" for m in materials)
    mass_sum = " + ".join(_ident(m + "_t") for m in materials)
    sums = ",\n".join(
        f"coalesce(sum(b.{_ident(c)}), 0) AS {_ident(c)}"
        for c in ["gfa_m2", *[m + "_t" for m in materials], "mass_t"]
    )
    sd = sedonadb.connect()
    sd.read_parquet(str(register)).to_view("register")
    sd.read_parquet(str(districts)).to_view("districts")
    for name in ("use_function", "wall_structure", "function_defaults", "intensity"):
        sd.read_parquet(str(lookups / f"{name}.parquet")).to_view(name)

    buildings = sd.sql(
        f"""
        WITH standing AS (
            SELECT
                r."id_lokalId" AS building_id,
                u.function,
                coalesce(w.structure, d.default_structure) AS structure,
                CASE WHEN r."byg038SamletBygningsareal" > 0 THEN r."byg038SamletBygningsareal"
                     ELSE ST_Area(r.geometry) * CASE WHEN r."byg054AntalEtager" > 0
                          THEN r."byg054AntalEtager" ELSE d.default_floors END
                END AS gfa_m2,
                r.geometry
            FROM register r
            JOIN use_function u ON r."byg021BygningensAnvendelse" = u.code
            JOIN function_defaults d ON d.function = u.function
            LEFT JOIN wall_structure w ON r."byg032YdervaeggensMateriale" = w.code
            WHERE r.status = '6'
        ),
        weighed AS (
            SELECT
                s.building_id,
                i.archetype_id,
                s.gfa_m2,
                {mass},
                s.geometry,
                ST_PointOnSurface(s.geometry) AS point
            FROM standing s
            JOIN intensity i ON i.archetype_id = s.function || '-' || s.structure
        )
        SELECT
            w.building_id, d.district_id, w.archetype_id, w.gfa_m2,
            {", ".join(_ident(m + "_t") for m in materials)},
            {mass_sum} AS mass_t,
            w.geometry
        FROM weighed w
        LEFT JOIN districts d ON ST_Contains(d.geometry, w.point)
        """
    ).to_memtable()
    buildings.to_view("buildings")
    buildings.to_parquet(output / "buildings.parquet")
    sd.sql(
        f"""
        SELECT d.district_id, count(b.building_id) AS n_buildings, {sums}, d.geometry
        FROM districts d
        LEFT JOIN buildings b ON b.district_id = d.district_id
        GROUP BY d.district_id, d.geometry
        """
    ).to_parquet(output / "districts.parquet")
