"""Open a run's QGIS outputs in real QGIS and report what QGIS sees, as JSON on stdout.

Run by ``tests/test_qgis.py`` with the system Python that has QGIS's bindings (not the
venv): ``/usr/bin/python3 tests/qgis_check.py <run folder> <png folder>``.

It opens ``project.qgs`` and reports every layer (valid, features, CRS, renderer, class
field and classes, temporal settings, tree group and visibility); for the flows layer
also the rows a one-year frame of the project's temporal controller selects and the rows
its class expression draws. It opens every ``layers.gpkg`` layer directly (its stored
default style must apply) and loads each ``<layer>.qml`` onto it. It renders the project
(``project.png``) and the flows layer in one frame (``flows.png``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # after QT_QPA_PLATFORM: Qt reads it when it loads
    Qgis,
    QgsApplication,
    QgsDateTimeRange,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsFeatureRequest,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsVectorLayerTemporalContext,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QSize, QTime
from qgis.PyQt.QtGui import QColor


def renderer_info(layer: QgsVectorLayer) -> dict:
    r = layer.renderer()
    out: dict = {"renderer": r.type() if r is not None else None}
    if r is not None and r.type() == "graduatedSymbol":
        ranges = r.ranges()
        out.update(
            attribute=r.classAttribute(),
            classes=len(ranges),
            labels=[x.label() for x in ranges],
            lower=ranges[0].lowerValue() if ranges else None,
            upper=ranges[-1].upperValue() if ranges else None,
            colors=[x.symbol().color().name() for x in ranges],
        )
    tp = layer.temporalProperties()
    out["temporal"] = {
        "active": tp.isActive(),
        "mode": int(tp.mode()),
        "start_field": tp.startField(),
    }
    return out


def year_range(year: int) -> QgsDateTimeRange:
    """The temporal controller's frame for a calendar year, [1 Jan, next 1 Jan)."""
    return QgsDateTimeRange(
        QDateTime(QDate(year, 1, 1), QTime(0, 0)),
        QDateTime(QDate(year + 1, 1, 1), QTime(0, 0)),
        True,
        False,
    )


def render(settings: QgsMapSettings, path: Path) -> None:
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(path), "PNG")


def main(run: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    project = QgsProject.instance()
    result: dict = {"qgis": Qgis.QGIS_VERSION, "read": project.read(str(run / "project.qgs"))}
    result["crs"] = project.crs().authid()
    result["absolute_paths"] = project.readBoolEntry("Paths", "/Absolute", True)[0]
    view = project.viewSettings().defaultViewExtent()
    result["view_extent"] = [view.xMinimum(), view.yMinimum(), view.xMaximum(), view.yMaximum()]
    ts = project.timeSettings()
    rng = ts.temporalRange()
    result["time"] = {
        "start": rng.begin().toString("yyyy-MM-dd"),
        "end": rng.end().toString("yyyy-MM-dd"),
        "step": ts.timeStep(),
        "unit": QgsUnitTypes.toString(ts.timeStepUnit()),
    }
    scope = QgsExpressionContextUtils.projectScope(project)
    result["variables"] = {n: scope.variable(n) for n in scope.variableNames() if "mfa" in n}

    root = project.layerTreeRoot()
    layers = {}
    for node in root.findLayers():
        layer = node.layer()
        info: dict = {"valid": layer is not None and layer.isValid()}
        if info["valid"]:
            info.update(
                table=layer.source().split("layername=")[-1].split("|")[0],
                features=layer.featureCount(),
                crs=layer.crs().authid(),
                group=node.parent().name(),
                visible=node.isVisible(),
                **renderer_info(layer),
            )
        layers[node.name()] = info
    result["layers"] = layers
    result["drawing_order"] = [lyr.name() for lyr in root.layerOrder()]

    flows = next(  # the layer of the GeoPackage table "flows" (its name says what it draws)
        (
            lyr
            for lyr in project.mapLayers().values()
            if lyr.source().split("layername=")[-1].split("|")[0] == "flows"
        ),
        None,
    )
    if flows is not None and flows.isValid():
        year = int(result["time"]["start"][:4]) + 10
        ctx = QgsVectorLayerTemporalContext()
        ctx.setLayer(flows)
        where = flows.temporalProperties().createFilterString(ctx, year_range(year))
        request = QgsFeatureRequest().setFilterExpression(where)
        years = [f["year"] for f in flows.getFeatures(request)]
        result["flows_frame"] = {"year": year, "rows": len(years), "years": sorted(set(years))}
        if flows.renderer() is not None:  # none without districts: a table
            expression = QgsExpression(flows.renderer().classAttribute())
            ec = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(flows))
            drawn = 0
            for f in flows.getFeatures():
                ec.setFeature(f)
                drawn += expression.evaluate(ec) is not None
            result["flows_drawn_rows"] = drawn

    # the layers of the GeoPackage opened directly: their stored default style applies
    direct = {}
    bare_options = QgsVectorLayer.LayerOptions()
    bare_options.loadDefaultStyle = False
    for name in sorted({v["table"] for v in layers.values() if v["valid"]}):
        uri = f"{run / 'layers.gpkg'}|layername={name}"
        layer = QgsVectorLayer(uri, name, "ogr")  # applies the stored default style
        info: dict = {"valid": layer.isValid()}
        if layer.isValid():
            info.update(features=layer.featureCount(), **renderer_info(layer))
            # QGIS (3.22) leaves out the temporal part of a default style applied while
            # the layer is created; "restore default style" applies all of it
            _, ok = layer.loadDefaultStyle()
            info["default_style"] = {"loaded": ok, **renderer_info(layer)}
            bare = QgsVectorLayer(uri, name, "ogr", bare_options)
            info["without_default_style"] = bare.renderer() and bare.renderer().type()
            qml = run / f"{name}.qml"
            if qml.exists():
                _, ok = bare.loadNamedStyle(str(qml))
                info["qml"] = {"loaded": ok, **renderer_info(bare)}
            del bare
        direct[name] = info
        del layer
    result["direct"] = direct

    settings = QgsMapSettings()
    settings.setLayers([lyr for lyr in root.layerOrder() if root.findLayer(lyr).isVisible()])
    settings.setDestinationCrs(project.crs())
    settings.setExtent(view)
    settings.setOutputSize(QSize(1200, 800))
    settings.setBackgroundColor(QColor(255, 255, 255))
    context = QgsExpressionContext()
    context.appendScope(QgsExpressionContextUtils.globalScope())
    context.appendScope(QgsExpressionContextUtils.projectScope(project))
    settings.setExpressionContext(context)
    render(settings, out / "project.png")
    if flows is not None and flows.isValid() and flows.isSpatial():
        settings.setLayers([flows])
        settings.setIsTemporal(True)
        settings.setTemporalRange(year_range(result["flows_frame"]["year"]))
        render(settings, out / "flows.png")
    result["images"] = sorted(p.name for p in out.glob("*.png"))
    del flows, settings
    project.clear()
    return result


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.setPrefixPath("/usr", True)
    app.initQgis()
    try:
        data = main(Path(sys.argv[1]), Path(sys.argv[2]))
    finally:
        QgsProject.instance().clear()  # layers left alive at exitQgis() crash Python
        app.exitQgis()
    print(json.dumps(data, default=str))
