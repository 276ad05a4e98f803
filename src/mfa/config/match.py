"""A pipeline's ``[match]`` table: reuse matching (``mfa match``) after every successful
run of the pipeline, by the nightly flow and the plain runner alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MatchSection"]


class MatchSection(BaseModel):
    """What ``mfa match`` gets after each run (paths relative to the pipeline file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    demand: Path = Field(description="the sites (CSV in the pipeline CRS, or a vector file)")
    supply: list[Path] = Field(default_factory=list, description="extra supply files")
    hubs: Path | None = None
    network: Path | None = Field(
        default=None,
        description="road network for road km: OSM XML extract or a road line layer",
    )
    output: Path | None = Field(
        default=None, description="the matching's folder; default <output root>/<name>/matching"
    )
    config: Path | None = Field(
        default=None, description="the config folder with match.toml; default the vocabulary's"
    )
    years: tuple[int, int] | None = Field(default=None, description="[first, last] of supply")
    max_km: Annotated[float, Field(gt=0)] | None = None
    unit: Literal["building", "grid", "district"] = "grid"
    cell_size_m: Annotated[float, Field(gt=0)] = 250.0
    scenario: str = "baseline"
    weights: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]] | None = Field(
        default=None, description="[co2, cost]: minimise co2 × kg CO2e + cost × DKK"
    )
    solver: Literal["ortools", "networkx", "highs"] = "ortools"

    @model_validator(mode="after")
    def _sane(self) -> MatchSection:
        if self.years is not None and self.years[1] < self.years[0]:
            raise ValueError("years: the first year comes after the last; swap them")
        if self.weights is not None and self.weights == (0.0, 0.0):
            raise ValueError("weights: both are 0; give [1, 0] for net CO2")
        return self

    def files(self) -> list[tuple[str, Path]]:
        """The input files it names, with their keys (for the pipeline's file checks)."""
        named = [("match.demand", self.demand), ("match.hubs", self.hubs)]
        named += [("match.network", self.network)]
        named += [(f"match.supply[{i}]", f) for i, f in enumerate(self.supply)]
        return [(k, f) for k, f in named if f is not None]
