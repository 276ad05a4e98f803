"""Pipeline files: one declarative TOML file per place/run, validated before any data is read.

A pipeline file names the place (``name``), the projected CRS all areas are computed in, the
sources (register, footprints, districts), the model knowledge to use (archetype rules and
an intensity table from ``config/``), where outputs go, how to compute and when to run.

Relative paths in a pipeline file are relative to the file itself, so a pipeline can be run
from any working directory. Unknown keys, wrong types, missing files and a geographic CRS
are rejected with a :class:`~mfa.errors.ConfigError` that names the file, the key and the fix.
"""

from __future__ import annotations

from mfa.config.load import config_digest, load_pipeline
from mfa.config.models import (
    NAME_PATTERN,
    Archetypes,
    Cache,
    Compute,
    Dynamics,
    Grid,
    InputFile,
    Intensities,
    MapLayers,
    Output,
    Pipeline,
    Scenario,
    Schedule,
    Uncertainty,
)
from mfa.config.sources import (
    DistrictSource,
    FootprintSource,
    HeightSource,
    RegisterSource,
    Sources,
    UnitSource,
)

__all__ = [
    "NAME_PATTERN",
    "Archetypes",
    "Cache",
    "Compute",
    "DistrictSource",
    "Dynamics",
    "FootprintSource",
    "Grid",
    "HeightSource",
    "InputFile",
    "Intensities",
    "MapLayers",
    "Output",
    "Pipeline",
    "RegisterSource",
    "Scenario",
    "Schedule",
    "Sources",
    "Uncertainty",
    "UnitSource",
    "config_digest",
    "load_pipeline",
]
