"""Material mass of buildings: floor area × intensity."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["material_mass"]


def material_mass(
    gfa_m2: pd.Series, archetype_id: pd.Series, intensity_kg_m2: pd.DataFrame
) -> pd.DataFrame:
    """Tonnes of each material per building.

    Parameters
    ----------
    gfa_m2
        Gross floor area (m²).
    archetype_id
        Archetype per building, a row label of ``intensity_kg_m2``.
    intensity_kg_m2
        Matrix archetype × material (kg/m² GFA), from :func:`mfa.stocks.intensity_matrix`.

    Returns
    -------
    pandas.DataFrame
        Index-aligned with the inputs: one ``<material>_t`` column per material and
        ``mass_t``, their sum (t = m² × kg/m² / 1000).
    """
    rows = intensity_kg_m2.index.get_indexer(archetype_id.astype(object))
    if (rows < 0).any():
        missing = archetype_id[rows < 0].iloc[0]
        raise KeyError(f"archetype {missing!r} has no intensity row")
    kg_m2 = intensity_kg_m2.to_numpy(dtype=float)[rows]
    tonnes = kg_m2 * gfa_m2.to_numpy(dtype=float)[:, None] / 1000.0
    out = pd.DataFrame(
        tonnes, index=gfa_m2.index, columns=[f"{m}_t" for m in intensity_kg_m2.columns]
    )
    out["mass_t"] = np.sum(tonnes, axis=1)
    return out
