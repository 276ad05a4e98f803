"""Exact aggregation of building stocks to districts."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd

__all__ = [
    "UNASSIGNED",
    "aggregate_districts",
    "district_coverage",
    "district_layer",
    "district_sums",
]

#: district_id of the row that collects buildings outside every district polygon.
UNASSIGNED = "_unassigned"


def district_sums(buildings: pd.DataFrame, sum_columns: list[str]) -> pd.DataFrame:
    """Per ``district_id`` (``_unassigned`` outside every district): ``building_count``,
    ``gfa_m2``, the ``sum_columns`` and, where buildings have a ``hazard`` flag,
    ``hazard_building_count`` and ``hazard_mass_t`` (additive over buildings)."""
    key = buildings["district_id"].astype("string").fillna(UNASSIGNED)
    cols = ["gfa_m2", *sum_columns]
    sums = buildings[cols].astype(float).groupby(key, sort=True).sum()
    sums.insert(0, "building_count", key.value_counts().reindex(sums.index).astype("int64"))
    if "hazard" in buildings.columns:
        flagged = buildings["hazard"].notna()
        sums["hazard_building_count"] = flagged.groupby(key).sum().astype("int64")
        haz = buildings["mass_t"].astype(float).where(flagged, 0.0)
        sums["hazard_mass_t"] = haz.groupby(key).sum()
    sums.index.name = "district_id"
    return sums


def aggregate_districts(
    buildings: pd.DataFrame,
    districts: gpd.GeoDataFrame,
    sum_columns: list[str],
    name_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Sum building columns per district, with counts and densities: the district layer
    of :func:`district_layer` over :func:`district_sums` of ``buildings``."""
    return district_layer(
        district_sums(buildings, sum_columns), districts, sum_columns, name_column
    )


def district_layer(
    sums: pd.DataFrame,
    districts: gpd.GeoDataFrame,
    sum_columns: list[str],
    name_column: str | None = None,
) -> gpd.GeoDataFrame:
    """The district layer from per-district sums (see :func:`district_sums`).

    Parameters
    ----------
    sums
        Indexed by ``district_id``: ``building_count``, ``gfa_m2``, ``sum_columns`` and
        optionally ``hazard_building_count`` and ``hazard_mass_t`` (other columns are
        ignored).
    districts
        Polygons with a ``district_id`` column, in a projected CRS (metres).
    sum_columns
        The summed columns to publish (``mass_t``, ``<material>_t``, ...).

    Returns
    -------
    geopandas.GeoDataFrame
        Every district (zero where it has no building), sorted by ``district_id``, with
        ``building_count``, ``gfa_m2``, the sums, ``area_ha`` and ``mass_t_per_ha``
        (t/ha). Buildings outside every district are summed in one extra row with
        ``district_id`` = ``_unassigned`` and no geometry, so the sum over districts always
        equals the sum over buildings. Where ``districts`` has a ``population`` column,
        also ``mass_t_per_capita`` (t per inhabitant). Where the sums have hazard counts
        (e.g. asbestos recorded in the register), ``hazard_building_count`` and
        ``hazard_mass_share``, the share of the district's tonnes in flagged buildings.
    """
    cols = ["gfa_m2", *sum_columns]
    sums = sums[sums["building_count"] > 0]
    keep = [c for c in (name_column, "population") if c and c in districts.columns]
    base = districts[["district_id", *keep, "geometry"]]
    base = base.astype({"district_id": "string"})
    if UNASSIGNED in sums.index:
        extra = gpd.GeoDataFrame(
            {"district_id": pd.array([UNASSIGNED], dtype="string")},
            geometry=gpd.GeoSeries([None], crs=districts.crs),
            crs=districts.crs,
        )
        base = pd.concat([base, extra], ignore_index=True)
    table = sums[["building_count", *cols]]
    out = base.merge(table, left_on="district_id", right_index=True, how="left")
    out[["building_count"]] = out[["building_count"]].fillna(0).astype("int64")
    out[cols] = out[cols].astype(float).fillna(0.0)
    out["area_ha"] = out.geometry.area.fillna(0.0) / 10_000.0
    out["mass_t_per_ha"] = (out["mass_t"] / out["area_ha"]).where(out["area_ha"] > 0)
    if "hazard_building_count" in sums.columns:
        key = out["district_id"].astype(object)
        n_haz = key.map(sums["hazard_building_count"]).fillna(0).astype("int64")
        hazard_t = key.map(sums["hazard_mass_t"]).fillna(0.0).astype(float)
        out["hazard_building_count"] = n_haz
        out["hazard_mass_share"] = (hazard_t / out["mass_t"]).where(out["mass_t"] > 0, 0.0)
    if "population" in out.columns:
        pop = out["population"].astype("Float64")
        out["mass_t_per_capita"] = (out["mass_t"] / pop).where(pop > 0).astype("Float64")
    out = out.sort_values("district_id", kind="stable").reset_index(drop=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=districts.crs)


def district_coverage(layer: pd.DataFrame) -> dict[str, float | int]:
    """How well the districts cover the buildings, from a district layer
    (:func:`district_layer`): buildings and tonnes outside every district
    (``_unassigned``), their share of all tonnes (0…1), and districts with no building."""
    ids = layer["district_id"].astype("string")
    out = ids == UNASSIGNED
    total = float(layer["mass_t"].to_numpy(dtype=float).sum())
    mass_out = float(layer.loc[out.to_numpy(), "mass_t"].to_numpy(dtype=float).sum())
    return {
        "unassigned_buildings": int(layer.loc[out.to_numpy(), "building_count"].sum()),
        "unassigned_mass_t": mass_out,
        "unassigned_mass_share": mass_out / total if total > 0 else 0.0,
        "districts": int((~out).sum()),
        "districts_without_buildings": int(
            ((layer["building_count"].to_numpy() == 0) & ~out.to_numpy()).sum()
        ),
    }
