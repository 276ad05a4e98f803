"""Run by Debian's /usr/bin/python3 (QGIS's bindings): open the layers of a matching's
``matching.gpkg`` and print, as JSON, whether each is valid, its features and renderer."""

import json
import sys

from qgis.core import QgsApplication, QgsVectorLayer

app = QgsApplication([], False)
app.setPrefixPath("/usr", True)
app.initQgis()
seen = {}
for name in sys.argv[2:]:
    layer = QgsVectorLayer(f"{sys.argv[1]}|layername={name}", name, "ogr")
    valid = layer.isValid()  # never call layer.error() on an invalid layer (segfault)
    seen[name] = {
        "valid": valid,
        "features": layer.featureCount() if valid else None,
        "renderer": layer.renderer().type() if valid else None,
    }
    del layer
app.exitQgis()
print(json.dumps(seen))
