"""A GeoPackage layer written from its GeoParquet file by a child process.

pyogrio's ``write_arrow`` holds the GIL for the whole write (pyogrio 0.13: a Python loop
in another thread ran 2 of 51 iterations during a 4.4 s write), so no thread can work
beside it; the buildings layer is ~5 µs a building (1 M buildings: 5 s, three quarters
of the qgis step). A separate process can: :func:`start_layer_process` starts one as
soon as the buildings layer is complete, it writes that layer into a new GeoPackage while
the parent computes the districts and flows, and the qgis step waits for it
(:meth:`LayerProcess.wait`) and adds the other layers to the same file
(:func:`mfa.io.qgis.geopackage.write_geopackage` with ``written``).

The child is a new interpreter (``python -m mfa.io.qgis.background``; spawned, never a
fork of the threaded parent), started without a shell, and:

- dies with its parent: it sets ``PR_SET_PDEATHSIG`` = SIGKILL first thing
  (:func:`mfa.parallel.die_with_parent`; Linux), so a killed ``mfa`` leaves no writer;
- reports one JSON line on stdout: its rows, or its error in one line with the errno of
  a full, over-quota or read-only file system (:func:`mfa.io.storage.storage_errno`,
  asked in the child, where the half-written file still is);
- writes exactly what the in-process write writes (:func:`write_parquet_layer`, the
  same function), so the GeoPackage is the same either way.

:meth:`LayerProcess.wait` turns a failed or killed child into one line naming the
GeoPackage and the cause (:class:`~mfa.errors.OutputWriteError`), or, for a full disk,
an ``OSError`` with its errno, which the runner words as every full disk
(:func:`mfa.run.housekeeping.run_storage_error`). :meth:`LayerProcess.stop` kills it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mfa.errors import OutputWriteError
from mfa.io.qgis.layergeometry import LayerGeometry

__all__ = ["LayerProcess", "parquet_layer", "start_layer_process", "write_parquet_layer"]

#: The longest message of a child's error passed on (one line).
MESSAGE_CHARS = 500


def parquet_layer(
    path: Path, columns: Sequence[str]
) -> tuple[pd.DataFrame, LayerGeometry, Iterator[pa.Table]]:
    """A GeoParquet layer for the GeoPackage without parsing its geometries: the
    ``columns`` its style needs, its :class:`LayerGeometry` (types from the WKB headers,
    extent from the metadata) and its row groups as Arrow tables without ``bbox`` (read
    when written)."""
    from mfa.io.geoparquet import wkb_type_ids

    source = pq.ParquetFile(path)
    styled = source.read(columns=list(columns)).to_pandas()
    types = np.concatenate(
        [
            wkb_type_ids(source.read_row_group(i, columns=["geometry"])["geometry"])
            for i in range(source.num_row_groups)
        ]
        or [np.zeros(0, dtype=np.int64)]
    )
    # the file's key-value ``geo``: that of every batch (LayerWriter)
    box = json.loads(source.metadata.metadata[b"geo"])["columns"]["geometry"].get("bbox")
    batches = (
        source.read_row_group(i).drop_columns(["bbox"]) for i in range(source.num_row_groups)
    )
    return styled, LayerGeometry(types, tuple(box) if box else None), batches


def write_parquet_layer(gpkg: Path, name: str, source: Path, crs: str) -> int:
    """Write the GeoParquet layer ``source`` as layer ``name`` of a new GeoPackage
    ``gpkg`` (replacing the file), row group by row group; return its rows."""
    from mfa.io.qgis.geopackage import _through_gdal_files, _write_batches

    _, shape, batches = parquet_layer(source, [])
    Path(gpkg).unlink(missing_ok=True)
    with _through_gdal_files():
        return _write_batches(Path(gpkg), name, batches, shape, crs, True)


@dataclass
class LayerProcess:
    """A child process writing layer ``name`` of the GeoPackage ``gpkg``."""

    gpkg: Path
    name: str
    process: subprocess.Popen[bytes]

    def wait(self) -> dict[str, float]:
        """What the child did, once it has finished: ``rows`` written, its ``cpu_s`` and
        ``max_rss_mb``; its failure as one line."""
        out, err = self.process.communicate()
        code = self.process.returncode
        what = f"{self.gpkg}: writing its {self.name} layer (in a separate process)"
        outcome = "nothing was published and 'latest' is unchanged"
        if code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = f"signal {-code}"
            raise OutputWriteError(
                f"{what} was stopped by {sig} (killed from outside, e.g. by the "
                f"out-of-memory killer); {outcome}: check the machine's memory, then run again"
            )
        lines = out.decode("utf-8", "replace").strip().splitlines()
        try:
            report = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            report = {}
        if code == 0 and "rows" in report:
            return report
        cause = report.get("error") or _last_line(err) or f"exit code {code}"
        if report.get("errno"):  # a full, over-quota or read-only disk: the runner words it
            raise OSError(int(report["errno"]), f"{what} failed: {cause}", str(self.gpkg))
        raise OutputWriteError(f"{what} failed: {cause}; {outcome}")

    def stop(self) -> None:
        """Kill the child (if it still runs) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def _last_line(err: bytes) -> str:
    lines = [s for s in err.decode("utf-8", "replace").splitlines() if s.strip()]
    return lines[-1].strip()[:MESSAGE_CHARS] if lines else ""


def start_layer_process(gpkg: Path, name: str, source: Path, crs: str) -> LayerProcess:
    """Start a child that writes the GeoParquet layer ``source`` as layer ``name`` of a
    new GeoPackage ``gpkg`` (see the module). Call it from a thread that lives as long
    as the run (the runners' main thread): the child dies when that thread ends."""
    import mfa

    env = dict(os.environ)
    here = Path(mfa.__file__).resolve().parent.parent
    if here.name not in ("site-packages", "dist-packages"):  # a checkout: the child imports it
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(here), env.get("PYTHONPATH")) if p)
    args = {"gpkg": str(gpkg), "name": name, "source": str(source), "crs": crs}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mfa.io.qgis.background",
            str(os.getpid()),
            json.dumps(args),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
    )
    return LayerProcess(Path(gpkg), name, process)


def main(argv: Sequence[str]) -> int:
    """The child: die with the parent, write the layer, report one JSON line."""
    from mfa.parallel import die_with_parent

    die_with_parent(int(argv[0]))
    args = json.loads(argv[1])
    gpkg = Path(args["gpkg"])
    try:
        rows = write_parquet_layer(gpkg, args["name"], Path(args["source"]), args["crs"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        from mfa.io.storage import storage_errno

        code = storage_errno(exc, gpkg.parent)
        text = " ".join(str(exc).split())[:MESSAGE_CHARS] or type(exc).__name__
        print(json.dumps({"error": f"{type(exc).__name__}: {text}", "errno": code}))
        return 1
    print(json.dumps({"rows": rows, "cpu_s": round(os.times()[0] + os.times()[1], 2), **_peak()}))
    return 0


def _peak() -> dict[str, float]:
    """This process's peak resident memory (``VmHWM``; Linux, else nothing). Not
    ``ru_maxrss``: Linux carries it over ``exec`` from the parent's memory it was
    started from (gigabytes that were never this process's)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return {"max_rss_mb": round(int(line.split()[1]) / 1024, 1)}
    return {}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
