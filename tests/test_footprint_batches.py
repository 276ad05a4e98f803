"""A footprint file (a pulled OGC API / WFS GeoJSON snapshot, or any OGR file) is read
batch by batch: the same buildings and left-out records as the whole read, the same run
totals, one batch in memory."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.config import FootprintSource
from mfa.core.keys import SeenKeys, hash128, later_repeats
from mfa.errors import InputDataError
from mfa.io.footprints import FootprintBatches, buildings_from_footprint_file
from tests.conftest import MODEL, SAMPLE, write_pipeline


@pytest.fixture(scope="module")
def delft_geojson(tmp_path_factory) -> Path:
    """The Delft BGT footprints as GeoJSON (EPSG:28992), with what the rules look at across
    the file: an id repeated far after its first (the later is left out), an id whose first
    feature has no geometry (its second is the one kept), an excluded building tag."""
    g = gpd.read_file(SAMPLE / "delft_bgt_pand.gpkg", layer="pand")[
        ["identificatiebagpnd", "bgt_status", "geometry"]
    ]
    g["building"] = "yes"
    g.loc[5, "building"] = "carport"
    late = g.iloc[[3]].copy()  # feature 4 again at the end: a repeat across batches
    no_geom = g.iloc[[10]].copy()
    no_geom["geometry"] = None  # feature 11 first without a footprint, then with it
    g = pd.concat([no_geom, g, late], ignore_index=True)
    path = tmp_path_factory.mktemp("fp") / "pand.geojson"
    g.to_file(path, driver="GeoJSON")
    return path


def _source(path: Path) -> FootprintSource:
    return FootprintSource(file=str(path), id_column="identificatiebagpnd")


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.sort_values(by, kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("batch_rows", [1, 7, 50, 1000])
def test_batches_give_the_buildings_and_left_out_records_of_the_whole_read(
    delft_geojson: Path, rules, batch_rows: int
) -> None:
    whole, whole_dropped = buildings_from_footprint_file(
        _source(delft_geojson), "EPSG:28992", rules
    )
    reader = FootprintBatches(_source(delft_geojson), "EPSG:28992", rules, batch_rows)
    frames = list(reader)
    assert len(frames) == -(-162 // batch_rows)  # 160 + 2 features, one read per batch
    batched = pd.concat(frames)
    assert list(batched.index) == list(range(len(batched)))  # positions, in batch order
    pd.testing.assert_frame_equal(
        _sorted(pd.DataFrame(batched), ["building_id"]),
        _sorted(pd.DataFrame(whole), ["building_id"]),
    )
    dropped = reader.dropped()
    pd.testing.assert_frame_equal(
        _sorted(dropped, ["record_id", "reason"]), _sorted(whole_dropped, ["record_id", "reason"])
    )
    raw = gpd.read_file(delft_geojson)
    ids = raw.identificatiebagpnd.astype(str)
    assert dict(zip(dropped["record_id"], dropped["reason"], strict=True)) == {
        ids[0]: "no geometry",  # its second feature (12th) is kept
        ids[6]: "excluded building=carport: open structure without outer walls (like BBR use 920)",
        ids[161]: "duplicate id: the first was kept",  # the 4th feature again, at the end
    }


def test_the_kept_copy_of_a_repeated_id_is_the_first_with_a_footprint(
    delft_geojson: Path, rules
) -> None:
    raw = gpd.read_file(delft_geojson)
    frames = list(FootprintBatches(_source(delft_geojson), "EPSG:28992", rules, 5))
    kept = pd.concat(frames).set_index("building_id")
    first_empty = str(raw.identificatiebagpnd.iloc[0])  # no geometry, then feature 12 has one
    assert shapely.equals(kept.geometry[first_empty], raw.geometry.iloc[11])


def test_an_empty_file_is_one_empty_batch(tmp_path: Path, rules) -> None:
    path = tmp_path / "none.geojson"
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": []}).replace(
            '"features"',
            '"crs": {"type": "name", "properties": {"name": '
            '"urn:ogc:def:crs:EPSG::28992"}}, "features"',
        )
    )
    with pytest.raises(InputDataError, match="no column 'identificatiebagpnd'"):
        list(FootprintBatches(_source(path), "EPSG:28992", rules, 10))


def test_a_feature_without_an_id_is_named_by_its_place_in_the_file(tmp_path: Path, rules) -> None:
    g = gpd.read_file(SAMPLE / "delft_bgt_pand.gpkg", layer="pand")[
        ["identificatiebagpnd", "geometry"]
    ]
    g.loc[42, "identificatiebagpnd"] = None
    path = tmp_path / "pand.geojson"
    g.to_file(path, driver="GeoJSON")
    with pytest.raises(
        InputDataError, match=r"pand.geojson: feature 43 has no identificatiebagpnd"
    ):
        list(FootprintBatches(_source(path), "EPSG:28992", rules, 10))


def test_a_file_that_is_not_what_its_name_says_is_refused(tmp_path: Path, rules) -> None:
    path = tmp_path / "pand.geojson"
    path.write_text("<html>Service unavailable</html>")
    with pytest.raises(InputDataError, match="content is XML"):
        list(FootprintBatches(_source(path), "EPSG:28992", rules, 10))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 12), max_size=60),
    st.lists(st.integers(1, 9), min_size=1, max_size=8),
)
def test_seen_keys_mark_what_later_repeats_marks_for_any_cut(
    ids: list[int], cuts: list[int]
) -> None:
    keys = hash128(np.array([str(i) for i in ids], dtype=object))
    expected = later_repeats([keys])[0]
    seen, got, start = SeenKeys(), [], 0
    for size in cuts * (len(ids) // sum(cuts) + 1):
        if start >= len(ids):
            break
        got.append(seen.repeats(keys[start : start + size]))
        start += size
    got_all = np.concatenate(got) if got else np.zeros(0, dtype=bool)
    np.testing.assert_array_equal(got_all, expected)


RUN = (
    """
name = "t-fp-batches"
crs = "EPSG:28992"
[sources.footprints]
file = "{FILE}"
id_column = "identificatiebagpnd"
[compute]
batch_rows = {BATCH}
"""
    + MODEL
)


@pytest.fixture(scope="module")
def delft_4160(tmp_path_factory) -> Path:
    """The 160 Delft footprints 26 times, copy k moved k km east, with new ids (GeoJSON)."""
    g = gpd.read_file(SAMPLE / "delft_bgt_pand.gpkg", layer="pand")
    copies = []
    for k in range(26):  # 4,160 footprints: the 160 moved by k km east, new ids
        c = g[["identificatiebagpnd", "geometry"]].copy()
        c["identificatiebagpnd"] = c["identificatiebagpnd"].astype(str) + f"-{k}"
        c["geometry"] = c.geometry.translate(xoff=1000.0 * k)
        copies.append(c)
    path = tmp_path_factory.mktemp("fp4160") / "pand.geojson"
    pd.concat(copies, ignore_index=True).to_file(path, driver="GeoJSON")
    return path


def test_a_run_on_batches_has_the_totals_of_a_run_on_one_batch(
    tmp_path: Path, delft_4160: Path
) -> None:
    from mfa.run import run_pipeline

    path = delft_4160
    manifests = []
    for batch in (100_000, 1000):
        text = RUN.replace("{FILE}", str(path)).replace("{BATCH}", str(batch))
        pipeline = write_pipeline(tmp_path, text, f"p{batch}.toml")
        run = run_pipeline(pipeline, tmp_path / f"out{batch}", force=True)
        manifests.append(json.loads((run / "run.json").read_text()))
    one, many = manifests
    assert (
        one["compute"]["engine"]["buildings"]["batches"],
        many["compute"]["engine"]["buildings"]["batches"],
    ) == (1, 5)  # 4,160 features, 1,000 a batch
    assert one["row_counts"] == many["row_counts"]
    assert one["totals_t"].keys() == many["totals_t"].keys()
    for k, v in one["totals_t"].items():
        assert many["totals_t"][k] == pytest.approx(v, rel=1e-12), k
    assert one["total_gfa_m2"] == pytest.approx(many["total_gfa_m2"], rel=1e-12)


def test_a_footprint_file_read_in_batches_is_not_bounded_as_a_whole_file(
    tmp_path: Path, delft_4160: Path
) -> None:
    from mfa.config import load_pipeline

    assert delft_4160.stat().st_size > 1e6  # above the bound, the tables below it
    text = RUN.replace("{FILE}", str(delft_4160)).replace("{BATCH}", "1000")
    text = text.replace("[compute]\n", "[compute]\nmax_whole_file_mb = 1\n")
    load_pipeline(write_pipeline(tmp_path, text))  # streamed: no bound
    # conflated with a register, the footprints are read whole: bounded
    register = f'[sources.register]\npath = "{SAMPLE}/bbr_bygning_2020.parquet"\n'
    with pytest.raises(InputDataError, match=r"pand\.geojson: .* max_whole_file_mb = 1 MB"):
        text = text.replace("[sources.footprints]", register + "[sources.footprints]")
        load_pipeline(write_pipeline(tmp_path, text, "r.toml"))
