"""Bad input never corrupts: each case runs against a pipeline with a published `latest`.

Every case either fails with a typed error (mfa.errors) whose one-line message names the
file (and row, feature, column or key where there is one) and the fix, with exit code 2
from the CLI and the previous `latest` byte-identical; or the run goes on and the bad
records are quarantined with a reason (dropped.csv / repairs.csv). The table of cases and
outcomes is in docs/guide-analyst.md ("When an input is bad").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from typer.testing import CliRunner

from mfa.cli import app
from mfa.errors import ConfigError, InputDataError, InputNotFoundError, MfaError
from mfa.run import run_pipeline
from tests.conftest import ROOT, SAMPLE

REGISTER_PIPELINE = """
name = "bad"
crs = "EPSG:25832"
[sources.register]
path = "{register}"
{register_extra}
[sources.districts]
path = "{districts}"
{districts_layer}
id_column = "{district_id}"
[archetypes]
dir = "{root}/config/archetypes"
[intensities]
table = "{intensities}"
region = "OECD_EU15"
[uncertainty]
draws = {draws}
[grid]
cell_size_m = {cell}
[dynamics]
lifetimes = "{lifetimes}"
base_year = 2020
horizon = 2030
"""

HEIGHTS_PIPELINE = """
name = "bad-heights"
crs = "EPSG:28992"
[sources.footprints]
file = "{footprints}"
layer = "pand"
id_column = "identificatiebagpnd"
[sources.heights]
ndsm = "{ndsm}"
[archetypes]
dir = "{root}/config/archetypes"
[intensities]
table = "{root}/config/intensities/rasmi_2024.csv"
region = "OECD_EU15"
"""


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@dataclass
class Base:
    tmp: Path
    out: Path
    values: dict[str, str]
    template: str
    latest: Path

    def pipeline(self, name: str = "p.toml", text: str | None = None, **changes: str) -> Path:
        body = text if text is not None else self.template.format(**{**self.values, **changes})
        path = self.tmp / name
        path.write_text(body)
        return path


@pytest.fixture(scope="module")
def reg_base(tmp_path_factory) -> Base:
    tmp = tmp_path_factory.mktemp("bad")
    reg = gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet").iloc[:300]
    reg.to_parquet(tmp / "register.parquet")
    values = {
        "root": str(ROOT),
        "register": str(tmp / "register.parquet"),
        "register_extra": "",
        "districts": str(SAMPLE / "dagi_sogne_2014_sample.gpkg"),
        "districts_layer": 'layer = "sogne"',
        "district_id": "SOGNEKODE",
        "intensities": str(ROOT / "config/intensities/rasmi_2024.csv"),
        "lifetimes": str(ROOT / "config/lifetimes.toml"),
        "draws": "100",
        "cell": "100",
    }
    base = Base(tmp, tmp / "out", values, REGISTER_PIPELINE, tmp)
    run = run_pipeline(base.pipeline("good.toml"), base.out)
    base.latest = run.parent / "latest"
    return base


@pytest.fixture(scope="module")
def heights_base(tmp_path_factory) -> Base:
    tmp = tmp_path_factory.mktemp("bad-heights")
    values = {
        "root": str(ROOT),
        "footprints": str(SAMPLE / "delft_bgt_pand.gpkg"),
        "ndsm": str(SAMPLE / "delft_ahn3_ndsm_0p5m.tif"),
    }
    base = Base(tmp, tmp / "out", values, HEIGHTS_PIPELINE, tmp)
    run = run_pipeline(base.pipeline("good.toml"), base.out)
    base.latest = run.parent / "latest"
    return base


# --------------------------------------------------------------------------- makers
# Each maker writes the bad input into `tmp` and returns the pipeline file's changes.


def _register_df() -> gpd.GeoDataFrame:
    return gpd.read_parquet(SAMPLE / "bbr_bygning_2020.parquet").iloc[:300].copy()


def _csv_register(tmp: Path) -> pd.DataFrame:
    reg = _register_df()
    df = pd.DataFrame(reg.drop(columns="geometry")).astype("string")
    df["byg404Koordinat"] = reg.geometry.to_wkt()
    df["byg406Koordinatsystem"] = "5"
    return df


def truncated_parquet(tmp: Path) -> dict[str, str]:
    data = (tmp / "register.parquet").read_bytes()
    (tmp / "cut.parquet").write_bytes(data[: len(data) // 2])
    return {"register": str(tmp / "cut.parquet")}


def damaged_row_group(tmp: Path) -> dict[str, str]:
    """Row group 1 (records 101–200) of three damaged in place: its compressed pages
    overwritten, the file's structure intact (as a bad disk sector or a cut copy does)."""
    pq.write_table(pq.read_table(tmp / "register.parquet"), tmp / "rg.parquet", row_group_size=100)
    data = bytearray((tmp / "rg.parquet").read_bytes())
    group = pq.read_metadata(tmp / "rg.parquet").row_group(1)
    for j in range(group.num_columns):
        col = group.column(j)
        start = col.data_page_offset + 24  # past the page header
        end = col.data_page_offset + col.total_compressed_size
        data[start:end] = b"\xff" * max(0, end - start)
    (tmp / "rg.parquet").write_bytes(bytes(data))
    return {"register": str(tmp / "rg.parquet")}


def geometry_not_wkb(tmp: Path) -> dict[str, str]:
    table = pq.read_table(tmp / "register.parquet")
    wkb = table["geometry"].to_pylist()
    wkb[236] = b"\x01\x03not a geometry"
    i = table.column_names.index("geometry")
    table = table.set_column(i, "geometry", pa.array(wkb, pa.binary()))
    pq.write_table(table, tmp / "notwkb.parquet")
    return {"register": str(tmp / "notwkb.parquet")}


def text_as_parquet(tmp: Path) -> dict[str, str]:
    (tmp / "text.parquet").write_text("id_lokalId,status\n1,6\n")
    return {"register": str(tmp / "text.parquet")}


def empty_file(tmp: Path) -> dict[str, str]:
    (tmp / "empty.parquet").write_bytes(b"")
    return {"register": str(tmp / "empty.parquet")}


def broken_geo_metadata(tmp: Path) -> dict[str, str]:
    table = pq.read_table(tmp / "register.parquet")
    meta = dict(table.schema.metadata)
    meta[b"geo"] = b'{"version": "1.0.0", "primary_column": "geometry", "columns": {'
    pq.write_table(table.replace_schema_metadata(meta), tmp / "badgeo.parquet")
    return {"register": str(tmp / "badgeo.parquet")}


def geoparquet_without_crs(tmp: Path) -> dict[str, str]:
    reg = _register_df()
    reg.geometry.values.crs = None
    gpd.GeoDataFrame(reg, geometry="geometry", crs=None).to_parquet(tmp / "nocrs.parquet")
    return {"register": str(tmp / "nocrs.parquet")}


def geoparquet_other_crs(tmp: Path) -> dict[str, str]:
    _register_df().to_crs("EPSG:4326").to_parquet(tmp / "wgs84.parquet")
    return {"register": str(tmp / "wgs84.parquet")}


def csv_latin1(tmp: Path) -> dict[str, str]:
    df = _csv_register(tmp)
    df["vejnavn"] = "Ærøvej, Højbjerg"
    df.to_csv(tmp / "latin1.csv", index=False, encoding="cp1252")
    return {"register": str(tmp / "latin1.csv")}


def csv_missing_columns(tmp: Path) -> dict[str, str]:
    df = _csv_register(tmp).drop(columns=["byg021BygningensAnvendelse", "status"])
    df.to_csv(tmp / "missing.csv", index=False)
    return {"register": str(tmp / "missing.csv")}


def csv_misspelled_column(tmp: Path) -> dict[str, str]:
    df = _csv_register(tmp).rename(columns={"byg026Opfoerelsesaar": "byg026Opførelsesår"})
    df.to_csv(tmp / "misspelled.csv", index=False)
    return {"register": str(tmp / "misspelled.csv")}


def csv_semicolons(tmp: Path) -> dict[str, str]:
    _csv_register(tmp).to_csv(tmp / "semicolons.csv", index=False, sep=";")
    return {"register": str(tmp / "semicolons.csv")}


def non_numeric(tmp: Path) -> dict[str, str]:
    df = _csv_register(tmp)
    df.loc[7, "byg038SamletBygningsareal"] = "ca. 120"
    df.to_csv(tmp / "text-number.csv", index=False)
    return {"register": str(tmp / "text-number.csv")}


def csv_without_points(tmp: Path) -> dict[str, str]:
    df = _csv_register(tmp)
    df.loc[4, "byg404Koordinat"] = "POINT (x y)"
    df.to_csv(tmp / "badpoint.csv", index=False)
    return {"register": str(tmp / "badpoint.csv")}


def no_rows(tmp: Path) -> dict[str, str]:
    _register_df().iloc[:0].to_parquet(tmp / "norows.parquet")
    return {"register": str(tmp / "norows.parquet")}


def none_standing(tmp: Path) -> dict[str, str]:
    reg = _register_df()
    reg["status"] = "10"  # all demolished: zero rows after filtering
    reg.to_parquet(tmp / "demolished.parquet")
    return {"register": str(tmp / "demolished.parquet")}


def outside_districts(tmp: Path) -> dict[str, str]:
    reg = _register_df()
    reg = reg.set_geometry(reg.geometry.translate(0, -1_000_000))  # far south of Denmark
    reg.to_parquet(tmp / "elsewhere.parquet")
    return {"register": str(tmp / "elsewhere.parquet")}


def districts_duplicate_ids(tmp: Path) -> dict[str, str]:
    d = gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg", layer="sogne")
    d.loc[1, "SOGNEKODE"] = d.loc[0, "SOGNEKODE"]
    d.to_file(tmp / "dup.gpkg", layer="sogne")
    return {"districts": str(tmp / "dup.gpkg")}


def districts_no_id_column(tmp: Path) -> dict[str, str]:
    return {"district_id": "KODE"}


def districts_points(tmp: Path) -> dict[str, str]:
    d = gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg", layer="sogne")
    d = d.set_geometry(d.geometry.centroid)
    d.to_file(tmp / "points.gpkg", layer="sogne")
    return {"districts": str(tmp / "points.gpkg")}


def districts_no_crs(tmp: Path) -> dict[str, str]:
    d = gpd.read_file(SAMPLE / "dagi_sogne_2014_sample.gpkg", layer="sogne")
    d = d.set_crs(None, allow_override=True)
    d.to_parquet(tmp / "nocrs-districts.parquet")
    return {"districts": str(tmp / "nocrs-districts.parquet"), "districts_layer": ""}


def missing_file(tmp: Path) -> dict[str, str]:
    return {"register": str(tmp / "does-not-exist.parquet")}


def directory_not_file(tmp: Path) -> dict[str, str]:
    (tmp / "a-folder.parquet").mkdir(exist_ok=True)
    return {"register": str(tmp / "a-folder.parquet")}


def _intensities(tmp: Path, name: str, value: str) -> dict[str, str]:
    """A copy of the RASMI table (beside a materials.toml) with one p50 replaced."""
    (tmp / "intensities").mkdir(exist_ok=True)
    shutil.copy(ROOT / "config/materials.toml", tmp / "materials.toml")
    t = pd.read_csv(ROOT / "config/intensities/rasmi_2024.csv", dtype=str)
    row = t.index[(t["region"] == "OECD_EU15") & (t["material"] == "concrete")][0]
    t.loc[row, "p50"] = value
    t.to_csv(tmp / "intensities" / name, index=False)
    return {"intensities": str(tmp / "intensities" / name)}


def intensity_negative(tmp: Path) -> dict[str, str]:
    return _intensities(tmp, "negative.csv", "-12.5")


def intensity_missing_value(tmp: Path) -> dict[str, str]:
    return _intensities(tmp, "gap.csv", "")


def lifetimes_missing_archetype(tmp: Path) -> dict[str, str]:
    text = (ROOT / "config/lifetimes.toml").read_text()
    start = text.index("[RM]")
    end = text.index("[", start + 4)
    (tmp / "lifetimes.toml").write_text(text[:start] + text[end:])
    return {"lifetimes": str(tmp / "lifetimes.toml")}


def typo_key(tmp: Path) -> dict[str, str]:
    return {"register_extra": 'existing_stauts = ["6"]'}


def wrong_type(tmp: Path) -> dict[str, str]:
    return {"draws": '"many"'}


def negative_value(tmp: Path) -> dict[str, str]:
    return {"cell": "-100"}


def bad_toml(tmp: Path) -> str:
    return 'name = "bad"\ncrs = "EPSG:25832\n[sources.register]\npath = 1\n'


def bad_snapshot_pin(tmp: Path) -> str:
    return (
        'name = "bad"\ncrs = "EPSG:25832"\n[sources.footprints]\nplace = "Kalundborg"\n'
        f'snapshot = "yesterday"\n[archetypes]\ndir = "{ROOT}/config/archetypes"\n'
        f'[intensities]\ntable = "{ROOT}/config/intensities/rasmi_2024.csv"\n'
        'region = "OECD_EU15"\n'
    )


# raster and footprint cases (the Delft pipeline)


def _retag_raster(tmp: Path, name: str, **profile: object) -> str:
    src = SAMPLE / "delft_ahn3_ndsm_0p5m.tif"
    with rasterio.open(src) as ds:
        data, meta = ds.read(), ds.profile.copy()
    meta.update(profile)
    with rasterio.open(tmp / name, "w", **meta) as out:
        out.write(data)
    return str(tmp / name)


def raster_other_crs(tmp: Path) -> dict[str, str]:
    return {"ndsm": _retag_raster(tmp, "utm.tif", crs="EPSG:32631")}


def raster_no_crs(tmp: Path) -> dict[str, str]:
    return {"ndsm": _retag_raster(tmp, "nocrs.tif", crs=None)}


def raster_no_overlap(tmp: Path) -> dict[str, str]:
    with rasterio.open(SAMPLE / "delft_ahn3_ndsm_0p5m.tif") as ds:
        t = ds.transform
    moved = rasterio.Affine(t.a, t.b, t.c + 50_000, t.d, t.e, t.f + 50_000)
    return {"ndsm": _retag_raster(tmp, "elsewhere.tif", transform=moved)}


def raster_corrupt(tmp: Path) -> dict[str, str]:
    data = (SAMPLE / "delft_ahn3_ndsm_0p5m.tif").read_bytes()
    (tmp / "corrupt.tif").write_bytes(data[:2000])
    return {"ndsm": str(tmp / "corrupt.tif")}


def _footprints_with(tmp: Path, name: str, change: Callable[[gpd.GeoDataFrame], None]) -> str:
    fp = gpd.read_file(SAMPLE / "delft_bgt_pand.gpkg", layer="pand")
    change(fp)
    fp.to_file(tmp / name, layer="pand")
    return str(tmp / name)


BOWTIE_ID = 999_999_999


def _bowtie(fp: gpd.GeoDataFrame) -> None:
    x, y = fp.geometry.iloc[0].representative_point().coords[0]
    fp.loc[0, "identificatiebagpnd"] = BOWTIE_ID
    bow = shapely.Polygon([(x, y), (x + 10, y + 10), (x + 10, y), (x, y + 10), (x, y)])
    fp.loc[0, "geometry"] = bow


def invalid_geometry(tmp: Path) -> dict[str, str]:
    return {"footprints": _footprints_with(tmp, "bowtie.gpkg", _bowtie)}


def _nulls(fp: gpd.GeoDataFrame) -> None:
    fp.loc[[1, 2], "geometry"] = None


def null_geometries(tmp: Path) -> dict[str, str]:
    return {"footprints": _footprints_with(tmp, "nulls.gpkg", _nulls)}


def points_not_polygons(tmp: Path) -> dict[str, str]:
    def pts(fp: gpd.GeoDataFrame) -> None:
        fp["geometry"] = fp.geometry.representative_point()

    return {"footprints": _footprints_with(tmp, "points.gpkg", pts)}


def footprint_duplicate_ids(tmp: Path) -> dict[str, str]:
    def dup(fp: gpd.GeoDataFrame) -> None:
        fp.loc[5, "identificatiebagpnd"] = fp.loc[4, "identificatiebagpnd"]

    return {"footprints": _footprints_with(tmp, "dupids.gpkg", dup)}


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], dict[str, str] | str]
    error: type[MfaError] | None  # None: the run goes on, with `quarantined` records
    message: tuple[str, ...] = ()  # regexes the one-line message must match
    names_file: bool = True  # the message names the bad file
    base: str = "register"
    quarantined: str | None = None  # regex of the dropped/repairs reason


CASES = [
    Case("truncated Parquet", truncated_parquet, InputDataError, ("cannot be read",)),
    Case("text file named .parquet", text_as_parquet, InputDataError, ("cannot be read",)),
    Case(
        "Parquet with a damaged row group",
        damaged_row_group,
        InputDataError,
        ("row group 1 \\(records 101–200\\)", "damaged", "export it again"),
    ),
    Case(
        "GeoParquet geometry that is not WKB",
        geometry_not_wkb,
        InputDataError,
        ("record 237", "not a WKB geometry"),
    ),
    Case("empty (0-byte) file", empty_file, InputDataError, ("empty file",)),
    Case(
        "GeoParquet with broken geo metadata",
        broken_geo_metadata,
        InputDataError,
        ("'geo' metadata",),
    ),
    Case(
        "GeoParquet without CRS",
        geoparquet_without_crs,
        InputDataError,
        ("no CRS", "sources.register.crs"),
    ),
    Case("GeoParquet in another CRS (reprojected)", geoparquet_other_crs, None),
    Case("CSV in cp1252, not UTF-8", csv_latin1, InputDataError, ("not UTF-8", "save it as UTF-8")),
    Case(
        "CSV missing required columns",
        csv_missing_columns,
        InputDataError,
        ("missing BBR columns", "status", "rename the columns"),
    ),
    Case(
        "CSV with a misspelled column",
        csv_misspelled_column,
        InputDataError,
        ("missing BBR columns", "byg026Opfoerelsesaar", "byg026Opførelsesår"),
    ),
    Case("CSV separated by semicolons (Danish Excel export): read", csv_semicolons, None),
    Case(
        "non-numeric value in a numeric column",
        non_numeric,
        InputDataError,
        ("line 9", "byg038SamletBygningsareal = 'ca. 120'", "not a number"),
    ),
    Case("point that is not WKT", csv_without_points, InputDataError, ("line 6", "not WKT")),
    Case("register with no rows", no_rows, InputDataError, ("no building records",)),
    Case(
        "zero standing buildings after filtering",
        none_standing,
        InputDataError,
        ("none of the 300 records", "existing_status"),
    ),
    Case(
        "no building in any district",
        outside_districts,
        InputDataError,
        ("none of the", "lies in a district"),
        names_file=False,
    ),
    Case(
        "districts with duplicate ids", districts_duplicate_ids, InputDataError, ("more than once",)
    ),
    Case(
        "districts without the id column",
        districts_no_id_column,
        InputDataError,
        ("dagi_sogne_2014_sample.gpkg", "no column 'KODE'", "SOGNEKODE", "fix sources.districts"),
        names_file=False,
    ),
    Case("districts are points, not polygons", districts_points, InputDataError, ("polygon",)),
    Case("districts without CRS", districts_no_crs, InputDataError, ("no CRS",)),
    Case("missing file", missing_file, InputNotFoundError, ("does not exist", "fix the path")),
    Case(
        "a directory instead of a file",
        directory_not_file,
        InputNotFoundError,
        ("is a folder", "give a file"),
    ),
    Case("intensity table with a negative value", intensity_negative, ConfigError, ("negative",)),
    Case(
        "intensity table with a missing value",
        intensity_missing_value,
        ConfigError,
        ("line 2308", "must be numbers", "fill them in"),
    ),
    Case(
        "lifetimes without a function (RM)",
        lifetimes_missing_archetype,
        ConfigError,
        (r"no \[RM\] table",),
    ),
    Case("pipeline key with a typo", typo_key, ConfigError, ("did you mean 'existing_status'",)),
    Case("pipeline value of the wrong type", wrong_type, ConfigError, ("uncertainty.draws",)),
    Case(
        "pipeline with a negative cell size",
        negative_value,
        ConfigError,
        ("grid.cell_size_m", "greater than 0"),
    ),
    Case("pipeline that is not TOML", bad_toml, ConfigError, ("not valid TOML", "line")),
    Case(
        "snapshot pin that is not a day", bad_snapshot_pin, ConfigError, ("snapshot must be a day",)
    ),
    Case(
        "raster in another CRS",
        raster_other_crs,
        InputDataError,
        ("EPSG:32631", "EPSG:28992"),
        base="heights",
    ),
    Case("raster without CRS", raster_no_crs, InputDataError, ("no CRS",), base="heights"),
    Case(
        "raster that does not overlap",
        raster_no_overlap,
        InputDataError,
        ("does not overlap",),
        base="heights",
    ),
    Case(
        "corrupt GeoTIFF",
        raster_corrupt,
        InputDataError,
        ("cannot be read as a raster",),
        base="heights",
    ),
    Case(
        "self-intersecting footprint (bowtie)",
        invalid_geometry,
        None,
        base="heights",
        quarantined="invalid footprint repaired with make_valid",
    ),
    Case(
        "null geometries",
        null_geometries,
        None,
        base="heights",
        quarantined="no geometry",
    ),
    Case(
        "points where footprints are expected",
        points_not_polygons,
        InputDataError,
        ("points", "polygon"),
        base="heights",
    ),
    Case(
        "duplicate footprint ids",
        footprint_duplicate_ids,
        None,
        base="heights",
        quarantined="duplicate id",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, reg_base: Base, heights_base: Base, tmp_path: Path) -> None:
    base = reg_base if case.base == "register" else heights_base
    before = _digest(base.latest)
    latest_run = base.latest.resolve()
    made = case.make(base.tmp)
    pipeline = (
        base.pipeline("case.toml", text=made)
        if isinstance(made, str)
        else base.pipeline("case.toml", **made)
    )
    bad_file = str(pipeline)
    if isinstance(made, dict) and Path(next(iter(made.values()))).is_absolute():
        bad_file = next(iter(made.values()))
    if case.error is None:  # the run goes on; what was wrong is written down
        run = run_pipeline(pipeline, tmp_path / "out")
        if case.quarantined:
            dropped = pd.read_csv(run / "dropped.csv")
            repairs = pd.read_csv(run / "repairs.csv")
            reasons = pd.concat([dropped["reason"], repairs["reason"]]).astype(str)
            assert reasons.str.contains(case.quarantined).any(), case.quarantined
        assert json.loads((run / "run.json").read_text())["status"] == "succeeded"
        assert _digest(base.latest) == before
        return
    with pytest.raises(case.error) as info:
        run_pipeline(pipeline, base.out)
    message = str(info.value)
    assert "\n" not in message.strip() or case.error is ConfigError, message
    for pattern in case.message:
        assert pd.Series([message]).str.contains(pattern).iloc[0], (pattern, message)
    if case.names_file:
        assert bad_file in message or Path(bad_file).name in message, message
    result = CliRunner().invoke(app, ["run", str(pipeline), "--no-prefect", "-o", str(base.out)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    assert base.latest.resolve() == latest_run
    assert _digest(base.latest) == before
    assert not (base.out / base.latest.parent.name / ".work").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: permissions can't be tested")
def test_unreadable_file(reg_base: Base) -> None:
    bad = reg_base.tmp / "secret.parquet"
    shutil.copy(reg_base.tmp / "register.parquet", bad)
    bad.chmod(0)
    with pytest.raises(InputDataError, match="permission"):
        run_pipeline(reg_base.pipeline("case.toml", register=str(bad)), reg_base.out)


def test_cases_cover_the_list() -> None:
    assert len(CASES) >= 35 and len({c.name for c in CASES}) == len(CASES)
    assert np.isin(["truncated Parquet", "corrupt GeoTIFF"], [c.name for c in CASES]).all()
