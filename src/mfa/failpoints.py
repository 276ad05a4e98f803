"""Named points where a test can kill the run process, to prove crash safety exactly there.

A run passes these points in order (see :data:`POINTS`). When the environment variable
``MFA_FAILPOINT`` names one, the process sends itself ``SIGKILL`` on reaching it: no
``finally``, no ``atexit``, no flush, as when the machine loses power or the OOM killer
strikes. ``tests/test_faults.py`` runs ``mfa run`` with each point and checks that the
previous ``latest`` is byte-identical, that no half-written file sits at a published path,
and that the next run succeeds. Unset (always, outside tests) a point costs one dict lookup.

With ``MFA_FAILPOINT_ACTION=stop`` the process stops itself (``SIGSTOP``) there instead,
until the test sends ``SIGCONT``: ``tests/test_full_disk.py`` fills the disk at that
exact point, so a run fails while writing the step after it.

A paged pull (:mod:`mfa.pull.oapif`) also passes ``pull:page:<k>`` after saving page k and
its cursor, and a file download ``pull:download:<k>`` after its k-th durable checkpoint
(:mod:`mfa.pull.download`; neither in :data:`POINTS`: only pipelines with a remote source
reach them); ``tests/test_pull.py``, ``tests/test_pull_download.py`` and
``tests/test_pull_datafordeler.py`` kill ``mfa pull`` there and check that the next pull
resumes. ``mfa synth`` passes ``synth:written`` with the register and districts written
in its hidden folder (``tests/test_synth.py`` kills it there: the target stays as it was).
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "failpoint"]

#: Every point a run passes, in order (each is named where it is placed).
POINTS = (
    "buildings:staged",  # a batch checked, about to be staged (on a worker thread)
    "buildings:computed",  # every batch checked and staged, run-wide rules applied
    "stocks:computed",  # every batch finished, the buildings layer complete in its .tmp
    "write:buildings.parquet",  # the buildings layer in .tmp, fsynced, not yet renamed
    "write:districts.parquet",
    "write:flows.parquet",
    # the GeoPackage's buildings layer half written (its first row group handed to GDAL):
    # in the qgis step, or from the end of the stocks step in the writer process
    # (mfa.io.qgis.background), which a point kills or stops instead of the run
    "gpkg:buildings",
    "qgis:written",  # layers.gpkg, project and styles written in the work folder
    "publish:checked",  # every layer checked, run.json and report.md written
    "publish:renamed",  # the run folder in place, latest not yet switched
    "publish:linked",  # the new link made beside latest, not yet swapped in
    "publish:switched",  # latest switched, old runs not yet pruned
)


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL when ``MFA_FAILPOINT`` is ``name`` (stop it with
    SIGSTOP when ``MFA_FAILPOINT_ACTION`` is ``stop``)."""
    if os.environ.get("MFA_FAILPOINT") == name:
        stop = os.environ.get("MFA_FAILPOINT_ACTION") == "stop"
        os.kill(os.getpid(), signal.SIGSTOP if stop else signal.SIGKILL)
