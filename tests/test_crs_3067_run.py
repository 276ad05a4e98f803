"""A run in EPSG:3067 (Finland's TM35FIN) from the command line to a published run: the
issue's run could not publish ("CRS is EPSG:3067, expected EPSG:3067"). Every layer, the
GeoPackage and the stock rasters carry EPSG:3067, compared by EPSG code and pyproj."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq
import pyogrio
import pyproj
import rasterio
import shapely

from mfa.crs import same_crs
from tests.conftest import ROOT

HERE = Path(__file__).parent
CRS = "EPSG:3067"


def _districts(path: Path) -> None:
    """Two districts, west and east halves of the extract's box (24.947–24.9535 °E,
    60.1688–60.1712 °N), in EPSG:3067."""
    t = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    x0, y0 = t.transform(24.940, 60.164)
    x1, y1 = t.transform(24.960, 60.176)
    xm = (x0 + x1) / 2
    gpd.GeoDataFrame(
        {"code": ["W", "E"], "name": ["Kluuvi west", "Kluuvi east"]},
        geometry=[shapely.box(x0, y0, xm, y1), shapely.box(xm, y0, x1, y1)],
        crs=CRS,
    ).to_file(path, layer="districts", engine="pyogrio")


def test_a_run_in_epsg_3067_publishes_with_every_layer_in_it(tmp_path: Path) -> None:
    _districts(tmp_path / "districts.gpkg")
    (tmp_path / "p.toml").write_text(f'''
name = "kluuvi"
crs = "{CRS}"
[sources.footprints]
osm_file = "{HERE}/data/helsinki_kluuvi.osm.pbf"
[sources.districts]
path = "{tmp_path}/districts.gpkg"
layer = "districts"
id_column = "code"
name_column = "name"
[archetypes]
dir = "{ROOT}/config/archetypes"
profile = "auto"
[intensities]
table = "{ROOT}/config/intensities/rasmi_2024.csv"
[uncertainty]
draws = 50
[grid]
cell_size_m = 50
''')
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, "-m", "mfa.cli", "run", "p.toml", "--no-prefect", "-o", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "published " in r.stdout
    run = (tmp_path / "out" / "kluuvi" / "latest").resolve()
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["crs"] == CRS
    # the region came from the CRS's country (profile = "auto", no region set)
    assert manifest["archetypes"]["intensities_region"]["country"] == "Finland"
    expected = pyproj.CRS.from_epsg(3067)
    layers = sorted(run.glob("*.parquet"))
    assert {p.stem for p in layers} >= {"buildings", "districts", "grid"}
    for path in layers:
        geo = json.loads(pq.read_schema(path).metadata[b"geo"])
        col = geo["columns"][geo["primary_column"]]
        crs = pyproj.CRS.from_json_dict(col["crs"])
        assert crs.to_epsg() == 3067 and crs.equals(expected), path.name
        assert gpd.read_parquet(path).crs.to_epsg() == 3067, path.name
    gpkg = run / "layers.gpkg"
    names = [n for n, geom in pyogrio.list_layers(gpkg) if geom]
    assert len(names) >= 3
    for name in names:
        wkt = pyogrio.read_info(gpkg, layer=name)["crs"]
        assert pyproj.CRS(wkt).to_epsg() == 3067 and same_crs(wkt, CRS), name
    rasters = sorted(run.glob("*.tif"))
    assert rasters, "no stock raster"
    for tif in rasters:
        with rasterio.open(tif) as src:
            got = pyproj.CRS.from_wkt(src.crs.to_wkt())
        # GDAL names the datum EUREF-FIN (pyproj's to_epsg() finds no code in it), but it
        # declares EPSG:3067 and has its projection: the same CRS
        ident = got.to_json_dict()["id"]
        assert (ident["authority"], int(ident["code"])) == ("EPSG", 3067)
        assert same_crs(got, CRS)
