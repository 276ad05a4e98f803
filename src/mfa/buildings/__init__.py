"""Buildings: normalise sources to the canonical schema, archetypes, district assignment."""

from mfa.buildings.archetypes import ArchetypeRules, archetype_id
from mfa.buildings.districts import assign_districts
from mfa.buildings.floor_area import gross_floor_area
from mfa.buildings.osm import normalise_osm
from mfa.buildings.register import normalise_bbr

__all__ = [
    "ArchetypeRules",
    "archetype_id",
    "assign_districts",
    "gross_floor_area",
    "normalise_bbr",
    "normalise_osm",
]
