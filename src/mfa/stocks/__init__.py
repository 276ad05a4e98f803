"""Stocks: material intensities, masses per building, aggregation."""

from mfa.stocks.aggregate import UNASSIGNED, aggregate_districts
from mfa.stocks.intensity import check_intensity_table, intensity_matrix
from mfa.stocks.mass import material_mass

__all__ = [
    "UNASSIGNED",
    "aggregate_districts",
    "check_intensity_table",
    "intensity_matrix",
    "material_mass",
]
