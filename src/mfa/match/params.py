"""The numbers and settings of reuse matching, validated before any data is read."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MatchParams"]


class MatchParams(BaseModel):
    """Parameters of one matching (from ``config/match.toml``, overridden by the caller).

    Units are in the names: kg CO2e per tonne·km, km, m, kg CO2e per tonne.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kgco2e_per_tkm: float = Field(gt=0)
    detour_factor: float = Field(ge=1)
    max_km: float = Field(gt=0)
    sensitivity_km: tuple[float, ...] = ()
    max_snap_m: float = Field(gt=0)
    run_grade: int = Field(ge=0)
    level: Literal["t", "p05", "p50", "p95"] = "p50"
    avoided_kgco2e_per_t: dict[str, float]
