"""Run by Debian's /usr/bin/python3 (QGIS's bindings): open a matching's ``project.qgs``
and the layers of its ``matching.gpkg`` and print, as JSON, what QGIS sees.

``/usr/bin/python3 tests/qgis_match_check.py <matching folder> <png> <layer>...``: each
layer opened from the GeoPackage directly (valid, features, renderer of its stored
default style); the project (read, CRS, relative paths, per tree layer: valid, table,
features, group, visible, renderer, CRS; the drawing order); and the project rendered
to ``<png>`` (how many pixels are not the background).
"""

import json
import sys

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

app = QgsApplication([], False)
app.setPrefixPath("/usr", True)
app.initQgis()
folder, png, names = sys.argv[1], sys.argv[2], sys.argv[3:]
seen = {}
for name in names:
    layer = QgsVectorLayer(f"{folder}/matching.gpkg|layername={name}", name, "ogr")
    valid = layer.isValid()  # never call layer.error() on an invalid layer (segfault)
    seen[name] = {
        "valid": valid,
        "features": layer.featureCount() if valid else None,
        "renderer": layer.renderer().type() if valid else None,
    }
    del layer

project = QgsProject.instance()
result = {"direct": seen, "read": project.read(f"{folder}/project.qgs")}
result["crs"] = project.crs().authid()
result["absolute_paths"] = project.readBoolEntry("Paths", "/Absolute", True)[0]
root = project.layerTreeRoot()
tree = {}
for node in root.findLayers():
    layer = node.layer()
    info = {"valid": layer is not None and layer.isValid()}
    if info["valid"]:
        r = layer.renderer()
        info.update(
            table=layer.source().split("layername=")[-1].split("|")[0],
            features=layer.featureCount(),
            group=node.parent().name(),
            visible=node.isVisible(),
            renderer=r.type() if r is not None else None,
            attribute=r.classAttribute()
            if r is not None and r.type() == "graduatedSymbol"
            else None,
            crs=layer.crs().authid(),
        )
    info["name"] = node.name()
    # keyed by table: a layer's name in the project says what its colours show
    tree[info.get("table", node.name())] = info
result["layers"] = tree
result["drawing_order"] = [
    lyr.source().split("layername=")[-1].split("|")[0] for lyr in root.layerOrder()
]

settings = QgsMapSettings()
settings.setLayers(root.layerOrder())
settings.setDestinationCrs(project.crs())
settings.setExtent(project.viewSettings().defaultViewExtent())
settings.setOutputSize(QSize(600, 400))
settings.setBackgroundColor(QColor(255, 255, 255))
job = QgsMapRendererParallelJob(settings)
job.start()
job.waitForFinished()
image = job.renderedImage()
image.save(png, "PNG")
white = QColor(255, 255, 255).rgb()
result["drawn_pixels"] = sum(
    image.pixel(x, y) != white for x in range(0, 600, 3) for y in range(0, 400, 3)
)
project.clear()
app.exitQgis()
print(json.dumps(result))
