"""Which rule gave each guessed attribute of a building, and the run's counts per rule (pure).

``*_source`` (``register`` / ``osm`` / ``raster`` / ``imputed`` / ``missing``) says
whether a value was observed; ``*_rule`` says *how* it was found, for the attributes in
:data:`RULE_ATTRIBUTES`. Every step that sets a value also sets its rule (the last rule
that set a value wins; ``repairs.csv`` keeps the history of replaced values). The rules
(:data:`RULES`) and where they are applied:

- ``measured``: read from the register (BBR) or measured in a height raster;
- ``tags``: the element's own OSM tags (``building=*``, ``building:levels``,
  ``height``, ``start_date``, a use tag, ``building=residential`` by its footprint);
- ``parts``: the outline's ``building:part`` elements (:mod:`mfa.buildings.osm_outlines`);
- ``height``: floors = height / storey height of the building's tag or function;
- ``floor_area``: floors = the register's floor area / footprint (BAG);
- ``landuse``: the function of the OSM ``landuse=*`` polygon that contains the building;
- ``neighbours``: the most frequent function / median floors of tagged buildings nearby;
- ``peers``: the median observed floors of buildings of the same function and decade;
- ``default``: a per-function default of ``config/archetypes`` (``defaults.toml``);
- ``repaired``: a value outside a plausibility limit, replaced by the next source
  (``repairs.csv`` holds the value replaced);
- ``archetype_median``, ``overall_median``, ``fallback``: a construction year filled by
  the run's :class:`mfa.dynamics.flows.YearFill` (the median year of the archetype, of
  all buildings, or the pipeline's stated ``fallback_construction_year``);
- ``missing``: no value.

The floor area's rule follows the floors it was made from (footprint × floors), unless
the register gave it (``measured``) or replaced it (``repaired``):
:func:`derive_gfa_rule`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "RULES",
    "RULE_ATTRIBUTES",
    "derive_gfa_rule",
    "rule_shares",
    "rule_sums",
    "set_rule",
    "with_rules",
]

#: Attributes whose rule is recorded (``<attribute>_rule``; ``gfa`` is the floor area).
RULE_ATTRIBUTES = ("function", "floors", "construction_year", "gfa", "height")

#: Every rule, with the words the report uses for it.
RULES: dict[str, str] = {
    "measured": "measured (register or height raster)",
    "tags": "from the element's OSM tags",
    "parts": "from its OSM building:parts",
    "height": "from its height / storey height",
    "floor_area": "from the register's floor area / footprint",
    "landuse": "from the OSM landuse polygon around it",
    "neighbours": "from tagged neighbours",
    "peers": "from buildings of the same function and decade",
    "default": "per-function default",
    "repaired": "repaired (outside a plausibility limit)",
    "archetype_median": "median year of its archetype",
    "overall_median": "median year of all buildings",
    "fallback": "the pipeline's fallback year",
    "missing": "missing",
}

#: The rule a value has when only its ``*_source`` is known (before any later rule).
_FROM_SOURCE = {
    "register": "measured",
    "raster": "measured",
    "osm": "tags",
    "imputed": "default",
    "missing": "missing",
}


def with_rules(buildings: pd.DataFrame) -> pd.DataFrame:
    """``buildings`` with a ``<attribute>_rule`` column for each of :data:`RULE_ATTRIBUTES`
    that it lacks, derived from the ``*_source`` column (register and raster values are
    ``measured``, OSM values ``tags``, imputed values ``default``). Columns present stay."""
    missing = [a for a in RULE_ATTRIBUTES if f"{a}_rule" not in buildings.columns]
    if not missing:
        return buildings
    out = buildings.copy(deep=False)
    for a in missing:
        src = buildings[f"{a}_source"].astype("string")
        out[f"{a}_rule"] = src.map(_FROM_SOURCE).fillna("missing").astype("string")
    return out


def set_rule(buildings: pd.DataFrame, mask: np.ndarray | pd.Series, attribute: str, rule: str):
    """Set ``<attribute>_rule`` to ``rule`` where ``mask`` (in place; the column is
    made from the sources first if it is absent)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; one of {list(RULES)}")
    col = f"{attribute}_rule"
    if col not in buildings.columns:
        src = buildings[f"{attribute}_source"].astype("string")
        buildings[col] = src.map(_FROM_SOURCE).fillna("missing").astype("string")
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        buildings.loc[mask, col] = rule


def derive_gfa_rule(buildings: pd.DataFrame) -> pd.Series:
    """The floor area's rule: ``measured`` where the register gave it, ``repaired`` where
    a register value was replaced, else the rule of the floors it was made from."""
    gfa = buildings["gfa_rule"].astype("string")
    floors = buildings["floors_rule"].astype("string")
    register = (buildings["gfa_source"] == "register").fillna(False).to_numpy(bool)
    repaired = (gfa == "repaired").fillna(False).to_numpy(bool)
    out = floors.where(~(register | repaired), gfa)
    out[register] = "measured"
    return out.astype("string")


def rule_sums(buildings: pd.DataFrame) -> pd.Series:
    """Buildings and tonnes (``mass_t``) per attribute and rule (additive over batches):
    index ``(attribute, rule, what)`` with ``what`` = ``buildings`` or ``mass_t``."""
    mass = buildings["mass_t"].to_numpy(dtype=float)
    parts = []
    for a in RULE_ATTRIBUTES:
        rule = buildings[f"{a}_rule"].astype("string").fillna("missing").to_numpy(object)
        frame = pd.DataFrame({"rule": rule, "buildings": 1.0, "mass_t": mass})
        g = frame.groupby("rule", sort=True)[["buildings", "mass_t"]].sum().stack()
        g.index = pd.MultiIndex.from_tuples(
            [(a, r, w) for r, w in g.index], names=["attribute", "rule", "what"]
        )
        parts.append(g)
    if not parts:
        return pd.Series(dtype=float)
    return pd.concat(parts)


def rule_shares(sums: pd.Series) -> dict[str, dict[str, dict[str, float]]]:
    """Per attribute and rule: buildings, tonnes and their shares of the run (0…1), from
    :func:`rule_sums` summed over the run. Rules in the order of :data:`RULES`."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    if sums.empty:
        return out
    order = {r: i for i, r in enumerate(RULES)}
    for a in RULE_ATTRIBUTES:
        if a not in sums.index.get_level_values(0):
            continue
        mine = sums.xs(a, level="attribute").unstack("what").fillna(0.0)
        n, t = float(mine["buildings"].sum()), float(mine["mass_t"].sum())
        rules = sorted(mine.index, key=lambda r: order.get(r, len(order)))
        out[a] = {
            r: {
                "buildings": int(mine.at[r, "buildings"]),
                "mass_t": round(float(mine.at[r, "mass_t"]), 3),
                "buildings_share": round(float(mine.at[r, "buildings"]) / n, 6) if n else 0.0,
                "mass_share": round(float(mine.at[r, "mass_t"]) / t, 6) if t else 0.0,
            }
            for r in rules
        }
    return out
