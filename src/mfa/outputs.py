"""The output layers of a run, described as data: one entry per layer.

Every place that handles a run's layers reads this list, never a list of its own: the
run's file names (:mod:`mfa.run.context`), the publish checks (:mod:`mfa.run.checks`),
the GeoPackage's layer descriptions, the default styles and the QGIS project's groups
(:mod:`mfa.io.qgis`). A new output layer is the step that writes its GeoParquet file plus
one entry here (choosing its check and style rule, or adding one there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["LAYERS", "OutputLayer", "layer", "project_groups"]

#: How :func:`mfa.run.publish.publish` checks a layer before the run is published:
#: ``buildings`` row group by row group (schema, tonnes, percentiles, unique ids);
#: ``groups`` a layer whose rows sum the buildings (every sum and the building count
#: balance, percentiles ordered); ``table`` its GeoParquet metadata and CRS only;
#: ``flows`` the stock balance of every series and the base year's stock.
Check = Literal["buildings", "groups", "table", "flows"]

#: The default style rule (:func:`mfa.io.qgis.styles.run_styles`): ``mass`` tonnes per
#: feature, ``density`` t/ha, ``observed`` share of observed floor areas, ``outflow``
#: the yearly demolition outflow.
Style = Literal["mass", "density", "observed", "outflow"]


@dataclass(frozen=True)
class OutputLayer:
    """One layer of a published run.

    ``name`` names it in the GeoPackage, the QGIS project and its ``.qml``; ``file`` is
    its GeoParquet file in the run folder; ``what`` says what a row sums (``groups``
    layers, for messages), ``check_name`` and ``conservation`` are the keys of its check
    and of the step's draw-conservation figure in ``run.json``.
    """

    name: str
    file: str
    description: str
    group: str
    visible: bool
    check: Check
    style: Style
    what: str = ""
    check_name: str = ""
    conservation: str = ""


#: The layers in the QGIS project's drawing order within a group (first on top).
LAYERS: tuple[OutputLayer, ...] = (
    OutputLayer(
        "buildings",
        "buildings.parquet",
        "One row per building: floor area (gfa_m2, m²), material tonnes (mass_t, "
        "<material>_t, t) with p05/p50/p95, archetype, provenance (*_source)",
        group="Stocks",
        visible=True,
        check="buildings",
        style="mass",
    ),
    OutputLayer(
        "grid",
        "grid.parquet",
        "Sums per grid cell that holds buildings: tonnes (t), mass_t_per_ha (t/ha)",
        group="Stocks",
        visible=True,
        check="groups",
        style="density",
        what="grid cells",
        check_name="grid_mass_balance",
        conservation="grid_draw_conservation_max_rel_error",
    ),
    OutputLayer(
        "districts",
        "districts.parquet",
        "Sums per district: tonnes (t) with percentiles, mass_t_per_ha (t/ha)",
        group="Stocks",
        visible=True,
        check="groups",
        style="density",
        what="districts",
        check_name="mass_balance",
        conservation="draw_conservation_max_rel_error",
    ),
    OutputLayer(
        "flows",
        "flows.parquet",
        "Per scenario, district, year and material: stock, inflow (construction) and "
        "outflow (demolition) in m² and t; date = end of the year",
        group="Flows",
        visible=False,
        check="flows",
        style="outflow",
        check_name="flows_stock_balance",
    ),
    OutputLayer(
        "quality",
        "quality.parquet",
        "Per district: share of buildings (0-1) whose attributes are observed, imputed or missing",
        group="Data quality",
        visible=False,
        check="table",
        style="observed",
    ),
)


def layer(name: str) -> OutputLayer:
    """The entry of the layer called ``name``."""
    for entry in LAYERS:
        if entry.name == name:
            return entry
    raise KeyError(name)


def project_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The QGIS project's tree: groups in order of first appearance, each with its layers
    in drawing order."""
    groups: dict[str, list[str]] = {}
    for entry in LAYERS:
        groups.setdefault(entry.group, []).append(entry.name)
    return tuple((g, tuple(names)) for g, names in groups.items())
