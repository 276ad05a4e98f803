"""Run by Debian's /usr/bin/python3 (QGIS's bindings): open a matching's ``project.qgs``
and the layers of its ``matching.gpkg`` and print, as JSON, what QGIS sees.

``/usr/bin/python3 tests/qgis_match_check.py <matching folder> <png> <layer>...``: each
layer opened from the GeoPackage directly (valid, features, renderer of its stored
default style); the project (read, CRS, relative paths, per tree layer: valid, table,
features, group, visible, renderer, CRS, temporal settings; the drawing order; the
temporal controller's range and step; a labelled layer's label field; a
graduated-size renderer's marker sizes); per temporal layer and year of that range, the
features QGIS's own filter for the year's frame selects (their first and last years);
and the project rendered to ``<png>`` (how many pixels are not the background).
"""

import json
import sys

from qgis.core import (
    QgsApplication,
    QgsDateTimeRange,
    QgsFeatureRequest,
    QgsGraduatedSymbolRenderer,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsVectorLayerTemporalContext,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QSize, QTime
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
ts = project.timeSettings()
span = ts.temporalRange()
result["time"] = {
    "start": span.begin().toString("yyyy-MM-dd"),
    "end": span.end().toString("yyyy-MM-dd"),
    "step": ts.timeStep(),
    "unit": QgsUnitTypes.toString(ts.timeStepUnit()),
}
YEARS = {"matches": ("year_out", "year_in")}  # the others: year_from, year_to
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
        if layer.labelsEnabled():
            info["labels"] = {"enabled": True, "field": layer.labeling().settings().fieldName}
        if r is not None and r.type() == "graduatedSymbol":
            size = getattr(QgsGraduatedSymbolRenderer, "GraduatedSize", None)
            if size is not None and r.graduatedMethod() == size:
                info["size_method"] = True
                info["sizes"] = [rng.symbol().size() for rng in r.ranges()]
        tp = layer.temporalProperties()
        info["temporal"] = {
            "active": tp.isActive(),
            "mode": int(tp.mode()),
            "start_field": tp.startField(),
            "end_field": tp.endField(),
        }
        if tp.isActive() and span.begin().isValid():
            # per year of the controller: what its frame [1 Jan, next 1 Jan) selects
            first, last = YEARS.get(info["table"], ("year_from", "year_to"))
            ctx = QgsVectorLayerTemporalContext()
            ctx.setLayer(layer)
            frames = {}
            for year in range(span.begin().date().year(), span.end().date().year()):
                frame = QgsDateTimeRange(
                    QDateTime(QDate(year, 1, 1), QTime(0, 0)),
                    QDateTime(QDate(year + 1, 1, 1), QTime(0, 0)),
                    True,
                    False,
                )
                where = tp.createFilterString(ctx, frame)
                request = QgsFeatureRequest().setFilterExpression(where)
                frames[year] = sorted([f[first], f[last]] for f in layer.getFeatures(request))
            info["frames"] = frames
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
