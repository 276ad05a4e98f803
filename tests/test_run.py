"""End to end: both sample pipelines, the checks behind `latest`, failures, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from geopandas.testing import assert_geodataframe_equal

from mfa.errors import InputDataError
from mfa.io.geoparquet import read_layer
from mfa.run import run_pipeline
from tests.conftest import DATA, ROOT, SAMPLE

MATERIALS = ["concrete", "brick", "wood", "steel", "glass", "aluminium", "copper", "plastics"]


@pytest.fixture(scope="module")
def dk_run(dk_sample_run: Path) -> Path:
    return dk_sample_run


def test_dk_sample_layers(dk_run: Path) -> None:
    latest = dk_run.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == dk_run.resolve()
    names = sorted(p.name for p in latest.iterdir())
    assert names == sorted(
        [
            "buildings.parquet",
            "districts.parquet",
            "dropped.csv",
            "flows.parquet",
            "grid.parquet",
            "quality.parquet",
            "repairs.csv",
            "report.md",
            "run.json",
            *[f"stock_{m}.tif" for m in ["mass", *MATERIALS]],
            "layers.gpkg",
            "project.qgs",
            *[f"{n}.qml" for n in ("buildings", "districts", "flows", "grid", "quality")],
        ]
    )
    b = gpd.read_parquet(latest / "buildings.parquet")
    d = gpd.read_parquet(latest / "districts.parquet")
    assert b.crs.to_epsg() == 25832 and d.crs.to_epsg() == 25832
    for col in [
        "building_id",
        "district_id",
        "gfa_m2",
        "floors",
        "construction_year",
        "use_code",
        "osm_building",
        "wall_material",
        "archetype_id",
        "mass_t",
        "gfa_source",
    ]:
        assert col in b.columns
    assert [f"{m}_t" for m in MATERIALS] == [
        c for c in b.columns if c.endswith("_t") and c != "mass_t"
    ]
    for col in [
        "building_count",
        "gfa_m2",
        "mass_t",
        "mass_t_per_ha",
        *[f"{m}_t" for m in MATERIALS],
    ]:
        assert col in d.columns
    # mass balance to 1e-9 relative, for every material
    for col in ["mass_t", *[f"{m}_t" for m in MATERIALS]]:
        assert d[col].sum() == pytest.approx(b[col].sum(), rel=1e-9)
    assert d.building_count.sum() == len(b)
    assert b.district_id.notna().all()  # every sample building lies in a shipped parish


def test_every_standing_building_with_floor_area_is_accounted_for(dk_run: Path) -> None:
    reg = gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet")
    standing = reg[reg.status == "6"]
    with_area = standing[
        (standing.byg038SamletBygningsareal.fillna(0) > 0)
        | (standing.byg041BebyggetAreal.fillna(0) > 0)
    ]
    b = pd.read_parquet(dk_run / "buildings.parquet", columns=["building_id"])
    manifest = json.loads((dk_run / "run.json").read_text())
    table = pd.read_csv(dk_run / "dropped.csv", dtype="string")
    dropped = dict(zip(table["record_id"], table["reason"], strict=True))
    listed = manifest["dropped"]["records"]  # run.json lists the first 1,000
    assert len(listed) == manifest["dropped"]["records_listed"] == min(len(table), 1000)
    assert {r["record_id"] for r in listed} <= set(dropped)
    missing = set(with_area.id_lokalId) - set(b.building_id) - set(dropped)
    assert not missing
    assert manifest["row_counts"]["records_read"] == len(reg)
    assert manifest["row_counts"]["buildings"] + manifest["row_counts"]["dropped"] == len(reg)
    assert sum(r["count"] for r in manifest["dropped"]["counts_by_reason"]) == len(dropped)


def test_quality_layer(dk_run: Path) -> None:
    q = gpd.read_parquet(dk_run / "quality.parquet")
    b = pd.read_parquet(dk_run / "buildings.parquet")
    assert q.crs.to_epsg() == 25832 and len(q) == 52
    assert q.building_count.sum() == len(b)
    populated = q[q.building_count > 0]
    for attr in ("gfa", "floors", "construction_year", "structure", "height"):
        total = populated[[f"{attr}_observed", f"{attr}_imputed", f"{attr}_missing"]].sum(axis=1)
        np.testing.assert_allclose(total, 1.0)
    # the register leaves byg038 at 0 for outbuildings: their floor area is imputed
    expected = (b.gfa_source == "imputed").mean()
    m = json.loads((dk_run / "run.json").read_text())
    assert m["quality"]["gfa"]["imputed"] == pytest.approx(expected, abs=1e-4)
    weighted = (populated.gfa_imputed * populated.building_count).sum() / len(b)
    assert weighted == pytest.approx(expected)


def test_geoparquet_metadata_and_bbox(dk_run: Path) -> None:
    for layer in ("buildings.parquet", "districts.parquet"):
        meta = pq.read_metadata(dk_run / layer)
        geo = json.loads(meta.metadata[b"geo"])
        assert geo["version"] == "1.1.0"
        col = geo["columns"]["geometry"]
        assert col["crs"]["id"]["code"] == 25832
        assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    # the bbox column filters: Kalundborg's buildings only
    box = (620_000, 6_130_000, 670_000, 6_190_000)
    sub = gpd.read_parquet(dk_run / "buildings.parquet", bbox=box)
    assert 0 < len(sub) < len(gpd.read_parquet(dk_run / "buildings.parquet"))


def test_read_layer_reads_as_geopandas_does(dk_run: Path) -> None:
    """mfa's reader (CRS parsed once) gives the frame geopandas gives, for every layer,
    with columns and row filters, and without the covering bbox column."""
    for layer in ("buildings", "districts", "grid", "quality", "flows"):
        path = dk_run / f"{layer}.parquet"
        ours, theirs = read_layer(path), gpd.read_parquet(path)
        assert "bbox" not in ours.columns
        assert_geodataframe_equal(ours, theirs, check_crs=True)
        assert ours.crs == theirs.crs and ours.crs.to_epsg() == 25832
    path = dk_run / "buildings.parquet"
    some = ["district_id", "mass_t", "geometry"]
    where = [("district_id", "in", ["7800", "7801"])]
    ours = read_layer(path, columns=some, filters=where)
    theirs = gpd.read_parquet(path, columns=some, filters=where)
    assert len(ours) > 0
    assert_geodataframe_equal(ours, theirs)
    with pytest.raises(ValueError, match="No geometry columns"):  # as geopandas
        read_layer(path, columns=["district_id", "mass_t"])


def test_manifest(dk_run: Path) -> None:
    m = json.loads((dk_run / "run.json").read_text())
    assert m["status"] == "succeeded" and m["runner"] == "plain"
    reg = next(i for i in m["inputs"] if i["role"] == "register")
    import hashlib

    assert (
        reg["sha256"]
        == hashlib.sha256((SAMPLE / "bbr_bygning_2020.parquet").read_bytes()).hexdigest()
    )
    assert len(m["config_digest"]) == 64
    assert m["checks"]["mass_balance"]["status"] == "passed"
    assert m["totals_t"]["mass_t"] == pytest.approx(sum(m["totals_t"][f"{x}_t"] for x in MATERIALS))
    assert set(m["timings_s"]) >= {"buildings", "stocks", "districts", "publish"}
    assert m["intensities"]["region"] == "OECD_EU15"
    assert m["provenance"]["gfa_source"]["register"] > 0


def test_same_inputs_same_layers(dk_run: Path, tmp_path: Path) -> None:
    again = run_pipeline(ROOT / "pipelines" / "dk-sample.toml", tmp_path)
    for layer in ("buildings.parquet", "districts.parquet", "grid.parquet", "quality.parquet"):
        a, b = gpd.read_parquet(dk_run / layer), gpd.read_parquet(again / layer)
        pd.testing.assert_frame_equal(a, b)
    for raster in dk_run.glob("stock_*.tif"):
        assert raster.read_bytes() == (again / raster.name).read_bytes()


def test_osm_sample(tmp_path: Path) -> None:
    run = run_pipeline(ROOT / "pipelines" / "osm-sample.toml", tmp_path)
    b = gpd.read_parquet(run / "buildings.parquet")
    # 34 elements tagged building: 3 cut at the extract edge, and way 514007867 (a 0.007 m²
    # sliver inside way 275436099) merged into that building
    assert len(b) == 30 and b.crs.to_epsg() == 25832
    assert b.building_id.str.startswith("osm:").all()
    assert (b.mass_t > 0).all()
    assert not (run / "districts.parquet").exists()
    m = json.loads((run / "run.json").read_text())
    assert m["row_counts"]["districts"] == 0
    assert m["row_counts"]["records_read"] == 34 == len(b) + m["row_counts"]["dropped"]
    reasons = {r["record_id"]: r["reason"] for r in m["dropped"]["records"]}
    assert reasons["osm:relation/318560"] == "cut at extract edge"
    assert reasons["osm:way/514007867"].startswith("overlaps osm:way/275436099")


def test_failed_run_leaves_latest_untouched(bbr_pipeline, tmp_path: Path) -> None:
    good = DATA / "bbr_kalundborg_60.csv"
    first = run_pipeline(bbr_pipeline(register=good), tmp_path)
    latest = first.parent / "latest"
    before = {p.name: p.read_bytes() for p in latest.iterdir()}
    bad = tmp_path / "bad.csv"
    df = pd.read_csv(good, dtype=str)
    df.loc[3, "byg054AntalEtager"] = "two"
    df.to_csv(bad, index=False)
    with pytest.raises(InputDataError, match="byg054AntalEtager = 'two'"):
        run_pipeline(bbr_pipeline(register=bad, name="bad.toml"), tmp_path)
    assert latest.resolve() == first.resolve()
    assert {p.name: p.read_bytes() for p in latest.iterdir()} == before
    assert not (first.parent / ".work").exists()  # the failed run's folder is removed
    left = sorted(p.name for p in first.parent.iterdir())
    assert left == sorted([".lock", first.name, "last-failure.md", "latest"])


def test_second_run_switches_latest(bbr_pipeline, tmp_path: Path) -> None:
    p = bbr_pipeline(register=DATA / "bbr_kalundborg_60.csv")
    a = run_pipeline(p, tmp_path)
    b = run_pipeline(p, tmp_path)
    assert a != b and a.exists() and b.exists()
    assert (tmp_path / "t-bbr" / "latest").resolve() == b.resolve()
    totals = [json.loads((r / "run.json").read_text())["totals_t"] for r in (a, b)]
    assert totals[0] == totals[1]
    assert np.isfinite(totals[0]["mass_t"])


def test_unchanged_inputs_skip_the_work(sample_copy: Path, tmp_path: Path) -> None:
    from mfa.run import run_key, unchanged_run

    pipeline = sample_copy / "pipelines" / "osm-sample.toml"
    out = tmp_path / "out"
    first = run_pipeline(pipeline, out)
    assert unchanged_run(pipeline, out) == first.resolve()
    assert run_pipeline(pipeline, out, force=False) == first.resolve()  # nothing recomputed
    assert len([p for p in (out / "osm-sample").iterdir() if p.name[0].isdigit()]) == 1
    # a changed model table (or input, or pipeline file) means a new run
    defaults = sample_copy / "config" / "archetypes" / "defaults.toml"
    defaults.write_text(defaults.read_text().replace("RM = 3", "RM = 4"))
    assert unchanged_run(pipeline, out) is None
    second = run_pipeline(pipeline, out, force=False)
    assert second != first.resolve() and (out / "osm-sample" / "latest").resolve() == second
    assert (
        json.loads((second / "run.json").read_text())["run_key"]
        != json.loads((first / "run.json").read_text())["run_key"]
    )
    # force recomputes regardless
    third = run_pipeline(pipeline, out, force=True)
    assert third != second
    from mfa.config import load_pipeline

    assert run_key(load_pipeline(pipeline)) is not None


def test_report_and_failure_report(bbr_pipeline, tmp_path: Path) -> None:
    good = DATA / "bbr_kalundborg_60.csv"
    run = run_pipeline(bbr_pipeline(register=good), tmp_path)
    report = (run / "report.md").read_text()
    assert report.startswith(f"# mfa run {run.name}: t-bbr")
    assert "| brick |" in report and "## Data quality" in report and "## Timings (s)" in report
    assert "change since previous run" in report
    bad = tmp_path / "bad.csv"
    df = pd.read_csv(good, dtype=str)
    df.loc[3, "byg038SamletBygningsareal"] = "lots"
    df.to_csv(bad, index=False)
    with pytest.raises(InputDataError):
        run_pipeline(bbr_pipeline(register=bad, name="bad.toml"), tmp_path)
    failure = (tmp_path / "t-bbr" / "last-failure.md").read_text()
    assert "Step **buildings** failed" in failure and str(bad) in failure
    assert "byg038SamletBygningsareal = 'lots'" in failure


def test_dk_sample_golden_totals(dk_run: Path) -> None:
    """The sample's published totals (README): they change only with a deliberate rule
    or model change, explained where it is made."""
    m = json.loads((dk_run / "run.json").read_text())
    assert m["row_counts"] == {
        "records_read": 3164,
        "buildings": 2144,
        "districts": 52,
        "dropped": 1020,
    }
    golden_t = {
        "mass_t": 478_684.71,
        "concrete_t": 202_508.13,
        "brick_t": 249_847.72,
        "wood_t": 12_017.38,
        "steel_t": 12_830.85,
        "glass_t": 750.13,
        "aluminium_t": 188.64,
        "copper_t": 73.78,
        "plastics_t": 468.09,
    }
    for k, v in golden_t.items():
        assert m["totals_t"][k] == pytest.approx(v, abs=0.01), k
    assert m["total_gfa_m2"] == pytest.approx(387_813.0, abs=0.5)
    band = m["uncertainty"]["totals_t"]
    assert (band["mass_t_p05"], band["mass_t_p50"], band["mass_t_p95"]) == pytest.approx(
        (397_310.152, 568_799.506, 777_452.608), abs=0.01
    )
    baseline = m["flows"]["summary"]["baseline"]
    assert baseline["outflow_t_next_10_years"]["mass"] == pytest.approx(11_994.5, abs=0.05)
    assert baseline["demolition_rate_per_year"] == pytest.approx(0.002326, abs=1e-6)


def test_the_manifest_and_the_run_key_cover_every_declared_file(dk_run: Path, sample_copy) -> None:
    """One declaration of a pipeline's files (Pipeline.input_files) makes the manifest's
    inputs and config files and the run key: a change to any of them is seen."""
    from mfa.config import load_pipeline
    from mfa.incremental import run_key

    p = load_pipeline(ROOT / "pipelines" / "dk-sample.toml")
    m = json.loads((dk_run / "run.json").read_text())
    recorded = {Path(f["path"]).resolve() for f in [*m["inputs"], *m["config_files"]]}
    assert recorded == {f.path.resolve() for f in p.input_files()}
    roles = {f.role for f in p.input_files()}
    assert {"register", "districts", "pipeline", "intensities", "materials", "lifetimes"} <= roles
    copy = load_pipeline(sample_copy / "pipelines" / "dk-sample.toml")
    before = run_key(copy, "2026-12-02")
    for f in copy.input_files():
        if f.role in ("lifetimes", "materials", "districts"):
            original = f.path.read_bytes()
            f.path.write_bytes(original + b"\n")
            assert run_key(copy, "2026-12-02") != before, f.role
            f.path.write_bytes(original)
    assert run_key(copy, "2026-12-02") == before


def test_a_pipeline_file_edited_during_a_run_does_not_change_the_run(
    bbr_pipeline, tmp_path: Path
) -> None:
    """Every step uses the pipeline and the model tables as prepare() read them: editing
    the file between steps (another statistic, other draws) changes nothing published."""
    from mfa.run import STEPS, prepare

    plain = run_pipeline(bbr_pipeline(name="plain.toml"), tmp_path / "plain")
    edited = bbr_pipeline(name="edited.toml")
    work = prepare(edited, tmp_path / "edited")
    text = edited.read_text()
    for step in STEPS:
        edited.write_text(
            text.replace('region = "OECD_EU15"', 'region = "OECD_EU15"\nstatistic = "p95"')
            + "\n[uncertainty]\ndraws = 10\nseed = 7\n"
        )
        result = step.run(work)
    a = json.loads((plain / "run.json").read_text())
    b = json.loads((Path(result) / "run.json").read_text())
    assert b["totals_t"] == a["totals_t"]
    assert b["uncertainty"] == a["uncertainty"]
