"""DuckDB with its spatial extension: one SQL pipeline, ``COPY … TO`` GeoParquet.

Offline: ``INSTALL spatial`` needs the internet, so the extension file shipped in the
PyPI package ``duckdb-extension-spatial`` (same version as ``duckdb``) is LOADed by path.
DuckDB 1.5 reads the register's CRS into the geometry type (``GEOMETRY('EPSG:25832')``)
and writes it back to the ``geo`` metadata; if an output lacks it anyway, the metadata is
fixed here (part of the timed work).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq


def extension_path() -> Path:
    """The spatial extension file inside the ``duckdb-extension-spatial`` package."""
    import duckdb_extension_spatial

    root = Path(duckdb_extension_spatial.__path__[0])
    found = sorted(root.rglob(f"v{duckdb.__version__}/spatial.duckdb_extension"))
    if not found:
        raise RuntimeError(
            f"no spatial extension for duckdb {duckdb.__version__} under {root}: install "
            f"duckdb-extension-spatial=={duckdb.__version__} (pip install '.[bench]')"
        )
    return found[0]


def _sql_str(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ensure_crs(path: Path, crs: dict | str) -> None:
    """Put ``crs`` into the ``geo`` metadata of GeoParquet ``path`` if it has none."""
    meta = pq.read_metadata(path).metadata or {}
    geo = json.loads(meta[b"geo"])
    column = geo["columns"][geo["primary_column"]]
    if column.get("crs") is not None:
        return
    column["crs"] = crs
    table = pq.read_table(path)
    table = table.replace_schema_metadata({**table.schema.metadata, b"geo": json.dumps(geo)})
    tmp = path.with_suffix(".crs.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def run(register: Path, districts: Path, lookups: Path, output: Path) -> None:
    """Compute the SPEC's stock-only job in DuckDB; write the two GeoParquet outputs."""
    lookups, output = Path(lookups), Path(output)
    output.mkdir(parents=True, exist_ok=True)
    materials = [
        n for n in pq.read_schema(lookups / "intensity.parquet").names if n != "archetype_id"
    ]
    mass = ",\n".join(f"gfa_m2 * i.{_ident(m)} / 1000 AS {_ident(m + '_t')}" for m in materials)
    mass_sum = " + ".join(_ident(m + "_t") for m in materials)
    sums = ",\n".join(
        f"coalesce(sum(b.{_ident(c)}), 0) AS {_ident(c)}"
        for c in ["gfa_m2", *[m + "_t" for m in materials], "mass_t"]
    )
    con = duckdb.connect()
    con.execute(f"LOAD {_sql_str(extension_path())}")
    con.execute(
        f"""
        CREATE TEMP TABLE buildings AS
        WITH standing AS (
            SELECT
                r.id_lokalId AS building_id,
                u.function,
                coalesce(w.structure, d.default_structure) AS structure,
                CASE WHEN r.byg054AntalEtager > 0 THEN r.byg054AntalEtager
                     ELSE d.default_floors END AS floors,
                CASE WHEN r.byg038SamletBygningsareal > 0 THEN r.byg038SamletBygningsareal
                     ELSE ST_Area(r.geometry) * floors END AS gfa_m2,
                r.geometry
            FROM read_parquet({_sql_str(register)}) r
            JOIN read_parquet({_sql_str(lookups / "use_function.parquet")}) u
                ON r.byg021BygningensAnvendelse = u.code
            JOIN read_parquet({_sql_str(lookups / "function_defaults.parquet")}) d
                USING (function)
            LEFT JOIN read_parquet({_sql_str(lookups / "wall_structure.parquet")}) w
                ON r.byg032YdervaeggensMateriale = w.code
            WHERE r.status = '6'
        ),
        weighed AS (
            SELECT
                s.building_id,
                s.function || '-' || s.structure AS archetype_id,
                s.gfa_m2,
                {mass},
                s.geometry,
                ST_PointOnSurface(s.geometry) AS point
            FROM standing s
            JOIN read_parquet({_sql_str(lookups / "intensity.parquet")}) i
                ON i.archetype_id = s.function || '-' || s.structure
        )
        SELECT
            w.building_id, d.district_id, w.archetype_id, w.gfa_m2,
            {", ".join(_ident(m + "_t") for m in materials)},
            {mass_sum} AS mass_t,
            w.geometry
        FROM weighed w
        LEFT JOIN read_parquet({_sql_str(districts)}) d ON ST_Contains(d.geometry, w.point)
        """
    )
    con.execute(
        f"COPY buildings TO {_sql_str(output / 'buildings.parquet')} "
        "(FORMAT parquet, COMPRESSION zstd)"
    )
    con.execute(
        f"""
        COPY (
            SELECT d.district_id, count(b.building_id) AS n_buildings, {sums}, d.geometry
            FROM read_parquet({_sql_str(districts)}) d
            LEFT JOIN buildings b USING (district_id)
            GROUP BY d.district_id, d.geometry
        ) TO {_sql_str(output / "districts.parquet")} (FORMAT parquet, COMPRESSION zstd)
        """
    )
    con.close()
    crs = _input_crs(Path(register))
    for name in ("buildings.parquet", "districts.parquet"):
        _ensure_crs(output / name, crs)


def _input_crs(register: Path) -> dict | str:
    geo = json.loads((pq.read_metadata(register).metadata or {})[b"geo"])
    return geo["columns"][geo["primary_column"]]["crs"]
