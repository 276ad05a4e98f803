"""Shared parts of the pull tests: pipelines against the stand-in, fixtures, helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import MODEL, ROOT, SAMPLE, write_pipeline
from tests.pull_standin import EPSG_28992, Services, delft_features, start

REGISTER = SAMPLE / "bbr_bygning_2020.parquet"
KALUNDBORG = ROOT / "tests" / "data" / "bbr_kalundborg_60.csv"

HTTP_PIPELINE = (
    """
name = "t-pull-http"
crs = "EPSG:25832"
[sources.register]
url = "{BASE}/files/bbr_bygning_2020.parquet"
protocol = "http"
[cache]
dir = "{CACHE}"
"""
    + MODEL
)

OAPIF_PIPELINE = (
    """
name = "t-pull-oapif"
crs = "EPSG:28992"
[sources.footprints]
url = "{BASE}/ogc"
protocol = "oapif"
collection = "pand"
page_size = {PAGE}
id_column = "identificatiebagpnd"
required_fields = ["identificatiebagpnd", "bgt_status"]
filters = { crs = "{CRS}" }
[cache]
dir = "{CACHE}"
"""
    + MODEL
)


@pytest.fixture(scope="module")
def features() -> list[dict]:
    return delft_features()


@pytest.fixture
def service(features: list[dict]) -> Iterator[str]:
    """A fresh stand-in (no script, no key, the sample data) on a free loopback port."""
    Services.features = list(features)
    Services.files = {"bbr_bygning_2020.parquet": REGISTER.read_bytes()}
    Services.script, Services.log, Services.key, Services.claimed_total = [], [], None, None
    Services.collections, Services.events, Services.downloads = {}, [], {}
    Services.ignore_sortby = False
    Services.ranges, Services.no_length = True, False
    records = pd.read_csv(KALUNDBORG, dtype=str, keep_default_na=False)
    Services.records = [{k: (v or None) for k, v in r.items()} for r in records.to_dict("records")]
    server, base = start()
    Services.server = server  # a test may stop it early (shutdown twice is harmless)
    yield base
    server.shutdown()
    server.server_close()


def pipeline_file(tmp: Path, base: str, text: str = HTTP_PIPELINE, page: int = 50) -> Path:
    for k, v in {"BASE": base, "CACHE": tmp / "cache", "PAGE": page, "CRS": EPSG_28992}.items():
        text = text.replace("{" + k + "}", str(v))
    return write_pipeline(tmp, text)


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
    }


def snapshot_bytes(cache: Path) -> dict[str, bytes]:
    """The published snapshots (data and sidecars) under ``cache``, by path: what a pull
    that found nothing new must leave as it was (mfa's own pull state aside)."""
    return {str(p.relative_to(cache)): p.read_bytes() for p in snapshots_in(cache)}


def snapshots_in(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() and p.parent.name[:2] == "20")


class Sleeps(list):
    def __call__(self, s: float) -> None:
        self.append(s)
