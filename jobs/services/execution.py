"""Execution: claim a run, give its attempt a Spark target and a sandboxed kernel, and
publish the outcome (output notebook, HTML, final state) fenced by the attempt number.

Every state change of a run is a conditional UPDATE (a claim, or a write fenced by the
attempt number and the expected state), so a duplicate delivery, a late worker or a
racing reaper changes nothing. See docs/run-states.md.
"""

import logging
import os
import socket
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from clusters import services as cluster_services
from clusters.backends import get_backend
from clusters.backends.local import end_connect_session
from clusters.models import Cluster
from jobs import emr_runner, executor, kernel, render
from jobs.models import Job, Run, RunEvent
from jobs.services.alerts import send_alert_on_commit
from jobs.services.dispatch import enqueue_run
from jobs.services.jobs import delete_files
from jobs.services.recovery import retry_delay
from portal.db import close_stale_connections
from portal.sandbox import SandboxUnavailable

log = logging.getLogger(__name__)

State = Run.State


def worker_name() -> str:
    """This process's name in run rows and events: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_run(run_id: int, worker: str, now: datetime | None = None) -> Run | None:
    """Move a QUEUED run to RUNNING for ``worker``; return it, or None if not claimable.

    One conditional UPDATE: a second delivery of the same message, a cancelled run, a
    run whose retry is not due yet or a run out of attempts all find nothing to claim.
    """
    now = now or timezone.now()
    with transaction.atomic():
        claimed = (
            Run.objects.filter(pk=run_id, state=State.QUEUED, attempt__lt=F("max_attempts"))
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .update(
                state=State.RUNNING,
                attempt=F("attempt") + 1,
                worker=worker,
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
                cells_done=0,
                cells_total=0,
                current_cell_index=None,
                current_cell_head="",
            )
        )
        if not claimed:
            return None
        run = Run.objects.select_related("job", "version").get(pk=run_id)
        RunEvent.objects.create(
            run=run,
            attempt=run.attempt,
            state=State.RUNNING,
            worker=worker,
            message="Claimed by a worker.",
        )
    return run


def record_progress(run: Run, progress: executor.Progress) -> str:
    """Write the heartbeat and progress of ``run``'s current attempt.

    Returns "continue" while the attempt still owns the run, "cancel" if someone asked
    to cancel it, and "lost" if the run was reaped, finished or deleted meanwhile.
    """
    fields = dict(
        heartbeat_at=timezone.now(),
        cells_total=progress.cells_total,
        cells_done=progress.cells_done,
        current_cell_index=progress.current_index,
        current_cell_head=progress.current_head,
    )
    mine = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=State.RUNNING)
    if mine.filter(cancel_requested_at__isnull=True).update(**fields):
        return "continue"
    if mine.filter(cancel_requested_at__isnull=False).update(**fields):
        return "cancel"
    return "lost"


class SparkTargetError(Exception):
    """The job's Spark target cannot be used for this run; the message says why.

    ``retry`` is True when a later attempt may succeed (a fresh cluster failed to start).
    """

    def __init__(self, message: str, retry: bool = False):
        super().__init__(message)
        self.retry = retry


def spark_target_for(run: Run):
    """``(master_url, cluster, owned)`` for a run: the Spark master or Spark Connect URL its
    kernel connects to, the cluster used (None for the embedded local Spark), and whether
    the cluster was started for this run (and must be terminated after it).

    For "new_cluster" a local standalone cluster is started and awaited here, in the run's
    worker; a retry reuses the cluster a previous attempt left READY. Its lifetime is the
    run's timeout plus ten minutes, so expiry stops it even if this worker dies.
    Raises SparkTargetError.
    """
    job = run.job
    if job.spark_target == Job.SparkTarget.CLUSTER:
        cluster = job.cluster
        if cluster is None or cluster.state != Cluster.State.READY:
            raise SparkTargetError(
                "The job's cluster is not running: start it, or choose another Spark target."
            )
        if cluster.backend != Cluster.Backend.LOCAL or cluster.owner_id != job.owner_id:
            raise SparkTargetError(
                "A job can run on one of its owner's local clusters only; "
                "for EMR choose “a fresh EMR cluster”."
            )
        return cluster.connect_url, cluster, False
    if job.spark_target == Job.SparkTarget.NEW_CLUSTER:
        cluster = cluster_services.launch_cluster_for_run(
            run, Cluster.Backend.LOCAL, margin_seconds=600, reuse_ready=True
        )
        if cluster.state == Cluster.State.READY:  # left by a previous attempt
            return cluster.connect_url, cluster, True
        cluster_services.start_cluster(cluster.pk)

        def still_mine():
            # Keep the run's heartbeat going while the cluster starts, and give up at once
            # if the run was cancelled or taken over meanwhile.
            answer = record_progress(run, executor.Progress())
            if answer != "continue":
                raise cluster_services.ClusterError(
                    "The run was cancelled while its cluster was starting."
                    if answer == "cancel"
                    else "The run was taken over by another attempt."
                )

        try:
            cluster = cluster_services.wait_until_ready(
                cluster, timeout=settings.CLUSTER_START_TIMEOUT, on_poll=still_mine
            )
        except cluster_services.ClusterError as exc:
            cluster_services.terminate_now(cluster, str(exc))
            raise SparkTargetError(str(exc), retry=True) from exc
        return cluster.connect_url, cluster, True
    return settings.LOCAL_SPARK_MASTER, None, False


def execute_run(run_id: int, worker: str | None = None) -> Run | None:
    """Claim, execute and finish one run; the body of the ``execute_run`` task.

    Returns the finished run, or None when there was nothing to claim (a duplicate
    delivery) or the attempt lost the run. Never raises for notebook failures.
    """
    worker = worker or worker_name()
    run = claim_run(run_id, worker)
    if run is None:
        log.info("nothing to claim run=%s", run_id)
        return None
    log.info(
        "executing run=%s job=%s attempt=%s worker=%s", run.pk, run.job_id, run.attempt, worker
    )
    with tempfile.TemporaryDirectory(prefix=f"run-{run.pk}-") as tmp:
        tmp = Path(tmp)
        source = tmp / "input.ipynb"
        with default_storage.open(run.version.storage_key, "rb") as fh:
            source.write_bytes(fh.read())
        partial = tmp / "partial.ipynb"
        uploaded = {"version": 0, "key": "", "next": 0.0}

        def tick(progress: executor.Progress) -> str:
            # This thread's connection may have broken (a database restart): reconnect
            # rather than fail every tick until the lease runs out.
            close_stale_connections()
            # The heartbeat first: rendering the live view must never delay it.
            answer = record_progress(run, progress)
            now = time.monotonic()
            # Rendering costs more as the notebook grows and competes with the kernel's
            # client for the GIL: after each render, wait ten times as long as it took.
            if (
                answer == "continue"
                and progress.partial_version != uploaded["version"]
                and partial.exists()
                and now >= uploaded["next"]
            ):
                uploaded["version"] = progress.partial_version
                key = _store_partial(run, partial, uploaded["key"])
                uploaded["next"] = time.monotonic() + 10 * (time.monotonic() - now)
                if key:
                    uploaded["key"] = key
                    Run.objects.filter(pk=run.pk, attempt=run.attempt).update(partial_key=key)
            return answer

        if run.job.spark_target == Job.SparkTarget.EMR_CLUSTER:
            outcome = _execute_on_emr(run, source.read_bytes(), tick, tmp)
            close_stale_connections()
            return finish_run(run, outcome)
        try:
            master, cluster, owned = spark_target_for(run)
        except SparkTargetError as exc:
            return finish_run(
                run,
                executor.Outcome("infra_error" if exc.retry else "failed", None, message=str(exc)),
            )
        if cluster is not None:
            Run.objects.filter(pk=run.pk).update(cluster=cluster)
        try:
            outcome = _execute_in_sandbox(
                run, source, tmp / "output.ipynb", partial, tick, master, cluster
            )
        finally:
            close_stale_connections()  # idle for the whole notebook: it may have been cut meanwhile
            if owned:
                cluster_services.terminate_now(cluster, "The run it was started for ended.")
        return finish_run(run, outcome)


#: The port of a cluster's Spark Connect endpoint on a sandbox's own loopback.
SANDBOX_CONNECT_PORT = 15002


def connect_user_id(run: Run) -> str:
    """The Spark Connect user id of ``run``'s sessions: its job owner's, ``u<user id>``."""
    return f"u{run.job.owner_id}"


def _execute_in_sandbox(
    run: Run, source: Path, output: Path, partial: Path, tick, master: str, cluster
) -> executor.Outcome:
    """Execute the notebook of ``run``'s current attempt in a sandbox of its own.

    The sandbox runs as the job owner's uid with no network; for a cluster target it
    reaches exactly that cluster's Spark Connect endpoint, as ``sc://localhost:15002``
    with the cluster's token and a Spark Connect session id of this attempt's own, whose
    operations are interrupted and released on the server when the attempt ends, however
    it ends. When no sandbox can be made the outcome is "failed" with the reason (fail
    closed: nothing runs unsandboxed unless KERNEL_SANDBOX=none).
    """
    owner_id = run.job.owner_id
    for earlier in range(1, run.attempt):  # what a killed worker's attempt left behind
        kernel.run_sandbox(f"r{run.pk}-a{earlier}", owner_id).destroy()
    session_id = str(uuid.uuid5(run.uuid, f"attempt-{run.attempt}")) if cluster is not None else ""
    extra_env = {"TELEMETRY_VIEWS_ROOT": kernel.views_root(owner_id)}  # the only views it may write
    try:
        sandbox = kernel.run_sandbox(
            f"r{run.pk}-a{run.attempt}",
            owner_id,
            forward_port=SANDBOX_CONNECT_PORT if cluster is not None else None,
        )
        sandbox.prepare()
    except (SandboxUnavailable, OSError, ValueError) as exc:
        log.error("no sandbox run=%s: %s", run.pk, exc)
        return executor.Outcome("failed", None, message=str(exc))
    try:
        if cluster is not None:
            host, port = cluster.connect_address
            if sandbox.enabled:
                sandbox.relay(host, port)
                port = SANDBOX_CONNECT_PORT
            # pyspark sends a token without TLS only to the host "localhost". A session is
            # (user id, session id) on the server: name both, so that the worker can end it.
            master = (
                f"sc://localhost:{port}/;session_id={session_id};user_id={connect_user_id(run)}"
            )
            extra_env["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = cluster.connect_token
    except (SandboxUnavailable, OSError) as exc:
        sandbox.destroy()
        return executor.Outcome(
            "failed", None, message=f"Could not reach the cluster's Spark Connect endpoint: {exc}"
        )
    parameters = {
        **run.parameters,
        "run_id": str(run.uuid),
        "logical_date": run.logical_date.isoformat(),
        "spark_master": master,
    }
    try:
        return executor.execute(
            source,
            output,
            parameters,
            spark_master=master,
            sandbox=sandbox,
            timeout_seconds=run.timeout_seconds,
            tick=tick,
            tick_interval=settings.RUN_HEARTBEAT_INTERVAL,
            lease_seconds=settings.RUN_STALE_AFTER,
            partial_path=partial,
            partial_interval=settings.RUN_PARTIAL_SAVE_INTERVAL,
            kernel_extra_env=extra_env,
            # ``tick`` used the database from the monitor thread: close its connections,
            # or they stay open until the process ends.
            on_monitor_exit=connections.close_all,
        )
    finally:
        sandbox.destroy()
        if cluster is not None:
            end_connect_session(cluster, session_id, connect_user_id(run))


def _execute_on_emr(run: Run, source: bytes, tick, workdir: Path) -> executor.Outcome:
    """Run the notebook as the step of a transient EMR cluster started for this run."""
    cluster = cluster_services.launch_cluster_for_run(run, Cluster.Backend.EMR, margin_seconds=1800)
    Run.objects.filter(pk=run.pk).update(cluster=cluster)
    parameters = {
        **run.parameters,
        "run_id": str(run.uuid),
        "logical_date": run.logical_date.isoformat(),
        "spark_master": "yarn",
    }
    return emr_runner.execute_on_emr(
        run, cluster, get_backend("emr"), source, parameters, tick, workdir
    )


def _store_partial(run: Run, partial: Path, previous_key: str) -> str | None:
    """Render the partial output notebook to HTML and store it for the live view."""
    try:
        html = render.render_html(nbformat.read(str(partial), as_version=4), title=run.job.name)
    except Exception:
        log.exception("could not render the partial notebook run=%s", run.pk)
        return None
    return _replace_file(previous_key or f"runs/{run.uuid}/partial.html", html.encode("utf-8"))


def _replace_file(key: str, data: bytes) -> str:
    """Store ``data`` under ``key``, replacing what was there; returns the key used."""
    if default_storage.exists(key):
        default_storage.delete(key)
    return default_storage.save(key, ContentFile(data))


_OUTCOME_STATE = {
    "succeeded": State.SUCCEEDED,
    "failed": State.FAILED,
    "timed_out": State.TIMED_OUT,
    "cancelled": State.CANCELLED,
}


def finish_run(run: Run, outcome: executor.Outcome) -> Run | None:
    """Publish an attempt's outcome, fenced by its attempt number.

    Stores the output notebook and its HTML (for every outcome with an output), then moves
    the run from RUNNING to its final state, or back to QUEUED for a retry after an
    infrastructure error while attempts remain. If the attempt no longer owns the run
    (reaped, cancelled while the worker was unreachable, deleted), its files are removed
    and None is returned. Alerts are sent after commit, once per run.
    """
    if outcome.status == "lost":
        log.warning("attempt lost run=%s attempt=%s", run.pk, run.attempt)
        return None
    now = timezone.now()
    if outcome.status == "infra_error" and run.attempt < run.max_attempts:
        delay = retry_delay(run.attempt)
        with transaction.atomic():
            moved = Run.objects.filter(
                pk=run.pk,
                attempt=run.attempt,
                state=State.RUNNING,
                cancel_requested_at__isnull=True,
            ).update(
                state=State.QUEUED,
                not_before=now + timedelta(seconds=delay),
                enqueued_at=now,
                worker="",
                state_reason=outcome.message[:300],
            )
            if moved:
                RunEvent.objects.create(
                    run=run,
                    attempt=run.attempt,
                    state=State.QUEUED,
                    message=f"Infrastructure failure, retrying in {delay:.0f} s: {outcome.message}"[
                        :500
                    ],
                )
                enqueue_run(run, countdown=delay)
        if moved:
            log.warning(
                "retrying run=%s attempt=%s in %.0fs: %s",
                run.pk,
                run.attempt,
                delay,
                outcome.message,
            )
            return Run.objects.get(pk=run.pk)
        if not Run.objects.filter(
            pk=run.pk, attempt=run.attempt, state=State.RUNNING, cancel_requested_at__isnull=False
        ).exists():
            return None
        # A cancel was asked for while the kernel died: the run ends CANCELLED, not retried.
        outcome = executor.Outcome(
            "cancelled", outcome.output_path, message="Cancelled on request."
        )

    state = _OUTCOME_STATE.get(outcome.status, State.FAILED)
    keys = {"output_key": "", "html_key": ""}
    if outcome.output_path and outcome.output_path.exists():
        data = outcome.output_path.read_bytes()
        keys["output_key"] = default_storage.save(
            f"runs/{run.uuid}/output.ipynb", ContentFile(data)
        )
        try:
            html = render.render_html(
                nbformat.reads(data.decode("utf-8"), as_version=4), title=run.job.name
            )
            keys["html_key"] = default_storage.save(
                f"runs/{run.uuid}/output.html", ContentFile(html.encode("utf-8"))
            )
        except Exception:
            log.exception("rendering failed run=%s", run.pk)
    error = outcome.error or {}
    if outcome.progress is not None:
        keys_progress = {
            "cells_done": outcome.progress.cells_done,
            "cells_total": outcome.progress.cells_total,
        }
    else:
        keys_progress = {}
    with transaction.atomic():
        finished = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=State.RUNNING).update(
            **keys_progress,
            state=state,
            finished_at=now,
            state_reason=("" if state == State.SUCCEEDED else outcome.message[:300]),
            error_cell_index=error.get("cell_index"),
            error_ename=(error.get("ename") or "")[:200],
            error_evalue=error.get("evalue") or "",
            error_traceback=error.get("traceback") or "",
            current_cell_index=None,
            current_cell_head="",
            **keys,
        )
        if not finished:
            transaction.on_commit(lambda: delete_files([k for k in keys.values() if k]))
            log.warning("stale attempt discarded run=%s attempt=%s", run.pk, run.attempt)
            return None
        if state == State.SUCCEEDED:
            Run.objects.filter(pk=run.pk).update(cells_done=F("cells_total"))
        RunEvent.objects.create(
            run=run,
            attempt=run.attempt,
            state=state,
            worker=run.worker,
            message=outcome.message[:500] or "Finished.",
        )
        send_alert_on_commit(run.pk)
    log.info("finished run=%s job=%s attempt=%s state=%s", run.pk, run.job_id, run.attempt, state)
    return Run.objects.get(pk=run.pk)
