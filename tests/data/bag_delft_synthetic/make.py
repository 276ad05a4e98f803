"""Make the BAG test fixture: real Delft footprints, SYNTHETIC BAG attributes.

No BAG extract could be fetched here (no internet), so the fixture is built from what the
repository has for Delft: the 160 BGT building outlines with their real BAG pand ids
(``geodata/sample/delft_bgt_pand.gpkg``), the real BAG verblijfsobject ids that BGT names
for the lowest and highest house number, and the real 3dfier LOD1 heights
(``tests/data/delft_3dfier_lod1_building_heights.csv``). Everything else is invented,
seeded and plausible: statuses, construction years, uses, floor areas (footprint ×
storeys from the height × 0.8), unit counts, unit ids beyond the real ones (serials
starting with 9), the UUID feature ids (uuid5 of the pand id) that PDOK's v2 links use.

The two files have the shape of PDOK's BAG OGC API v2 items (collections ``pand`` and
``verblijfsobject``, properties as listed by ``/collections/<c>/schema``), coordinates in
RD New (EPSG:28992, as asked for with ``crs=``), rounded to the millimetre.

    PYTHONPATH=src python tests/data/bag_delft_synthetic/make.py
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PDOK = "https://api.pdok.nl/kadaster/bag/ogc/v2/collections/pand/items/"
CRS = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::28992"}}
PAND_STATUS = [
    ("Pand in gebruik", 0.87),
    ("Pand in gebruik (niet ingemeten)", 0.03),
    ("Verbouwing pand", 0.03),
    ("Sloopvergunning verleend", 0.02),
    ("Pand gesloopt", 0.02),
    ("Bouw gestart", 0.015),
    ("Pand buiten gebruik", 0.015),
]


def _real_vbo(value: object) -> str | None:
    m = re.search(r"(\d{15,16})", str(value)) if pd.notna(value) else None
    return m.group(1).zfill(16) if m else None


def main() -> None:
    rng = np.random.default_rng(2026)
    g = gpd.read_file(ROOT / "geodata" / "sample" / "delft_bgt_pand.gpkg", layer="pand")
    h = pd.read_csv(ROOT / "tests" / "data" / "delft_3dfier_lod1_building_heights.csv")
    height = h.set_index(h["identificatiebagpnd"].astype(str))["height_above_ground"]
    pand_id = g["identificatiebagpnd"].astype(str).str.zfill(16)
    fid = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"bag:pand:{p}")) for p in pand_id]
    names, weights = zip(*PAND_STATUS, strict=True)
    status = rng.choice(names, size=len(g), p=np.array(weights) / sum(weights))
    era = rng.choice(3, size=len(g), p=[0.5, 0.3, 0.2])
    year = np.select(
        [era == 0, era == 1],
        [rng.integers(1600, 1900, len(g)), rng.integers(1900, 1970, len(g))],
        rng.integers(1970, 2016, len(g)),
    ).astype(object)
    year[rng.random(len(g)) < 0.03] = None
    area = shapely.area(g.geometry.values)
    storeys = np.maximum(
        1,
        np.round(height.reindex(g["identificatiebagpnd"].astype(str)).fillna(6.0).to_numpy() / 3.1),
    )
    serial = iter(range(900000001, 999999999))
    units = []
    seen: dict[str, dict] = {}
    uses_of = [set() for _ in range(len(g))]
    for i in range(len(g)):
        usable = area[i] * storeys[i] * 0.8
        real = [
            v
            for v in (
                _real_vbo(g["identificatiebagvbolaagstehuisnummer"].iloc[i]),
                _real_vbo(g["identificatiebagvbohoogstehuisnummer"].iloc[i]),
            )
            if v
        ]
        real = list(dict.fromkeys(real))
        for v in [v for v in real if v in seen]:  # a real unit that BGT names for two panden
            seen[v]["extra"].append(i)
            uses_of[i].update(seen[v]["gebruiksdoel"].split(","))
            real.remove(v)
        if area[i] < 25:
            plan: list[tuple[str, float]] = []  # a shed: no unit
        elif area[i] > 600 and rng.random() < 0.5:
            plan = [
                (
                    str(
                        rng.choice(
                            [
                                "kantoorfunctie",
                                "bijeenkomstfunctie,kantoorfunctie",
                                "onderwijsfunctie",
                            ]
                        )
                    ),
                    usable,
                )
            ]
        elif area[i] < 150 and storeys[i] <= 3:
            plan = [("woonfunctie", usable)]
        else:
            k = max(2, round(usable / 70))
            plan = []
            if rng.random() < 0.4:
                plan.append(("winkelfunctie", area[i] * 0.8))
                usable -= area[i] * 0.8
                k -= 1
            plan += [("woonfunctie", usable / k)] * k
        for j, (use, a) in enumerate(plan):
            vid = real.pop(0) if real and j in (0, len(plan) - 1) else f"050301{next(serial):010d}"
            state = "Verblijfsobject in gebruik"
            r = rng.random()
            if r < 0.03:
                state = "Verblijfsobject ingetrokken"
            elif r < 0.045:
                state = "Verblijfsobject in gebruik (niet ingemeten)"
            elif r < 0.05:
                state = "Verblijfsobject gevormd"
            uses_of[i].update(use.split(","))
            units.append(
                {
                    "identificatie": vid,
                    "pos": i,
                    "status": state,
                    "gebruiksdoel": use,
                    "oppervlakte": max(1, round(a)),
                    "extra": [],
                }
            )
            seen[vid] = units[-1]
    # a unit without floor area, and two units in two panden (a shared entrance hall)
    units[5]["oppervlakte"] = None
    pand_features = []
    for i in range(len(g)):
        n = sum(1 for u in units if u["pos"] == i or i in u["extra"])
        pand_features.append(
            {
                "type": "Feature",
                "id": fid[i],
                "geometry": shapely.geometry.mapping(
                    shapely.set_precision(g.geometry.iloc[i], 0.001)
                ),
                "properties": {
                    "aantal_verblijfsobjecten": n,
                    "bouwjaar": None if year[i] is None else int(year[i]),
                    "gebruiksdoel": ",".join(sorted(uses_of[i])),
                    "identificatie": pand_id.iloc[i],
                    "rdf_seealso": f"http://bag.basisregistraties.overheid.nl/bag/id/pand/{pand_id.iloc[i]}",
                    "status": str(status[i]),
                },
            }
        )
    unit_features = []
    for k, u in enumerate(units):
        i = u["pos"]
        links = [PDOK + fid[i]] + [PDOK + fid[j] for j in u["extra"]]
        if k in (10, 40):
            links.append(PDOK + fid[(i + 1) % len(g)])
        point = shapely.point_on_surface(g.geometry.iloc[i])
        unit_features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bag:vbo:{u['identificatie']}")),
                "geometry": shapely.geometry.mapping(shapely.set_precision(point, 0.001)),
                "properties": {
                    "gebruiksdoel": u["gebruiksdoel"],
                    "identificatie": u["identificatie"],
                    "oppervlakte": u["oppervlakte"],
                    "pand.href": links,
                    "rdf_seealso": "http://bag.basisregistraties.overheid.nl/bag/id/verblijfsobject/"
                    + u["identificatie"],
                    "status": u["status"],
                },
            }
        )
    for name, feats in (("pand", pand_features), ("verblijfsobject", unit_features)):
        doc = {"type": "FeatureCollection", "crs": CRS, "features": feats}
        (HERE / f"{name}.geojson").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(name, len(feats))


if __name__ == "__main__":
    main()
