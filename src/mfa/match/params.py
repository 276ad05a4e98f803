"""The numbers and settings of reuse matching, validated before any data is read."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MatchParams"]


class MatchParams(BaseModel):
    """Parameters of one matching (from ``config/match.toml``, overridden by the caller).

    Units are in the names: kg CO2e per tonne·km, km, m, kg CO2e per tonne, DKK per
    tonne·km, DKK per tonne. The allocation minimises ``co2_weight`` × net kg CO2e +
    ``cost_weight`` × net DKK; (1, 0), the default, is net CO2 alone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kgco2e_per_tkm: float = Field(gt=0)
    detour_factor: float = Field(ge=1)
    max_km: float = Field(gt=0)
    sensitivity_km: tuple[float, ...] = ()
    max_snap_m: float = Field(gt=0)
    #: ends of a road line layer's lines closer than this (m) are one node
    line_snap_m: float = Field(gt=0)
    run_grade: int = Field(ge=0)
    level: Literal["t", "p05", "p50", "p95"] = "p50"
    avoided_kgco2e_per_t: dict[str, float]
    co2_weight: float = Field(default=1.0, ge=0)
    cost_weight: float = Field(default=0.0, ge=0)
    dkk_per_tkm: float = Field(default=0.0, ge=0)
    #: price of the virgin product a reused tonne replaces, DKK per t (missing = 0)
    virgin_dkk_per_t: dict[str, float] = {}
    #: fee of the end of life a reused tonne escapes (< 0: scrap revenue), DKK per t
    end_of_life_dkk_per_t: dict[str, float] = {}
    #: defaults of a hub file without its own ``handling_dkk_per_t`` / ``holding_…`` columns
    hub_handling_dkk_per_t: float = Field(default=0.0, ge=0)
    hub_holding_dkk_per_t_year: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> MatchParams:
        if self.co2_weight == 0 and self.cost_weight == 0:
            raise ValueError("weights: co2_weight and cost_weight are both 0; give one > 0")
        return self

    @property
    def weights(self) -> tuple[float, float]:
        """(co2_weight per kg CO2e, cost_weight per DKK)."""
        return (self.co2_weight, self.cost_weight)
