"""Flow runs that `mfa serve` left behind: marked Crashed, not Running for ever.

Prefect's runner (``prefect.serve``) starts each flow run of a deployment in a child
process and keeps its pid in memory only. A killed ``mfa serve`` (SIGKILL, the OOM
killer, a lost machine) leaves the runs it had started Running or Pending in the API,
whether their process died with it or not, and nothing in Prefect ever ends them.
So:

- a deployment run records its own process as the flow run's ``infrastructure_pid``,
  ``"<host>:<pid>"``, when it starts (:func:`record_process`, the first thing
  ``mfa_pipeline`` does);
- ``mfa serve`` looks at the Running and Pending runs of the deployments it serves when
  it starts (before it serves) and when it exits (:func:`crash_orphans`), and marks
  Crashed, with a message, every one whose process is gone: no process of this host
  carries the run's id in its environment (``PREFECT__FLOW_RUN_ID``, set by the runner
  before the run's code starts), and its recorded pid is not alive, or is another
  process now (started after the run), or a zombie; a run that never recorded a process
  and has none is gone too (one ``mfa serve`` serves a deployment, as Prefect's
  ``serve`` assumes). A run whose process lives (an orphan still working) and a run
  recorded on another host are left as they are.

The state is set through Prefect's client (``set_flow_run_state(..., force=True)``: a
Running run may not become Crashed otherwise).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from datetime import datetime

__all__ = ["crash_orphans", "live_run_ids", "process_gone", "record_process"]

log = logging.getLogger(__name__)

#: The flow of every mfa deployment (flows/pipeline.py).
FLOW = "mfa-pipeline"
#: A process started this long after its run's start time is another one (pid reused), s.
PID_REUSE_SLACK_S = 2.0


def record_process() -> None:
    """Record this process as the current deployment run's ``infrastructure_pid``
    (``host:pid``); nothing outside a deployment run (``mfa run``). A failure to record
    is a warning: the run goes on."""
    from prefect import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None or run.deployment_id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(
                run.id, infrastructure_pid=f"{socket.gethostname()}:{os.getpid()}"
            )
    except Exception as exc:  # noqa: BLE001 - the run matters more than its bookkeeping
        log.warning("could not record the flow run's process (%s)", exc)


def live_run_ids() -> set[str]:
    """The flow run ids in the environment (``PREFECT__FLOW_RUN_ID``) of this host's
    processes that this user may read: the runs whose process lives."""
    import psutil

    ids = set()
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            run_id = proc.environ().get("PREFECT__FLOW_RUN_ID")
        except (psutil.Error, OSError):
            continue  # gone meanwhile, or another user's
        if run_id:
            ids.add(run_id)
    return ids


def process_gone(infrastructure_pid: str | None, started: datetime | None) -> str | None:
    """Why the process ``infrastructure_pid`` (``host:pid``) of a run that started at
    ``started`` is gone, or None when it lives or cannot be looked at (another host, or
    not written by :func:`record_process`). A run with no recorded process: call it
    only when no process carries the run's id (:func:`live_run_ids`)."""
    import psutil

    if not infrastructure_pid:
        return "it never recorded a process"
    host, _, pid_text = infrastructure_pid.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"its process {pid} has ended"
        if started is not None and proc.create_time() > started.timestamp() + PID_REUSE_SLACK_S:
            return f"its process {pid} has ended (the pid is another process's now)"
    except psutil.NoSuchProcess:
        return f"its process {pid} has ended"
    except psutil.AccessDenied:
        return None  # another user's process lives there
    return None


def crash_orphans(deployments: Sequence[str], when: str) -> list[str]:
    """Mark Crashed the Running and Pending flow runs of the deployments named
    ``deployments`` (of :data:`FLOW`) whose process is gone (:func:`process_gone`); one
    line per run marked, for the user. ``when`` says when (for the message: "start",
    "exit")."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    lines = []
    with get_client(sync_client=True) as client:
        names = {}
        for name in deployments:
            try:
                names[client.read_deployment_by_name(f"{FLOW}/{name}").id] = name
            except ObjectNotFound:
                continue  # never served here: no run of it
        if not names:
            return []
        flt = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=list(names)),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
            ),
        )
        runs, offset = [], 0
        while batch := client.read_flow_runs(flow_run_filter=flt, limit=200, offset=offset):
            runs += batch
            offset += len(batch)
        alive = live_run_ids() if runs else set()
        for run in runs:
            if str(run.id) in alive:
                continue
            started = run.start_time or (run.state.timestamp if run.state else None)
            reason = process_gone(run.infrastructure_pid, started)
            if reason is None:
                continue
            was = run.state.name if run.state else "Running"
            message = (
                f"mfa serve ({when}, pid {os.getpid()}): this {was} run has no live process: "
                f"{reason} (its mfa serve was killed or stopped before the run ended)"
            )
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            lines.append(
                f"flow run {run.name!r} of {names[run.deployment_id]} was {was} with no live "
                f"process ({reason}): marked Crashed"
            )
    return lines
