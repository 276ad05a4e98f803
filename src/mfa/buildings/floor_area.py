"""Floor area from footprints and storeys."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["gross_floor_area"]


def gross_floor_area(
    footprint_area_m2: pd.Series | np.ndarray, floors: pd.Series | np.ndarray
) -> pd.Series | np.ndarray:
    """Gross floor area (m²) = footprint area (m²) × number of floors.

    Index-aligned with the inputs; NaN where either input is missing. Floors may be
    fractional (e.g. 1.5 for a storey under the roof). Negative inputs are invalid and give NaN.
    """
    area = footprint_area_m2
    result = area * floors
    if isinstance(result, pd.Series):
        return result.where((area >= 0) & (floors >= 0))
    return np.where((np.asarray(area) >= 0) & (np.asarray(floors) >= 0), result, np.nan)
