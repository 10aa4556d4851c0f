"""The two ways an attempt executes, behind one interface.

``LocalExecutor``: the kernel runs in a sandbox of its own on the worker's host
(``portal.sandbox``, ``jobs.executor``), with the embedded local Spark, one of the owner's
running clusters, or a fresh local cluster started for the run. ``EmrExecutor``: the
notebook runs as the one step of a transient EMR cluster started for the run.

Each executor acquires the attempt's Spark target, runs the notebook and releases the
target; ``jobs.services.execution.execute_run`` calls the three in order and owns all the
run's state changes. (Read the Docs' build environments are the model: one interface,
one class per place a build can run.)
"""

import logging
import os
import time
import uuid
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import connections
from django.utils import timezone

from clusters import services as cluster_services
from clusters.backends import BackendError
from clusters.backends.emr import EmrBackend
from clusters.backends.local import end_connect_session
from clusters.models import Cluster
from jobs import emr_runner, executor, kernel, logs, spark_ui
from jobs.executor import Outcome, OutcomeStatus, Progress, TickAnswer, stop_message
from jobs.models import Job, Run
from jobs.services.attempt import Attempt, SparkTarget, SparkTargetError, record_stream_progress
from jobs.services.streams import prepare_stream_dirs
from jobs.stream_progress import PROGRESS_FILE_NAME, ProgressTail
from portal.sandbox import SandboxUnavailable
from quotas.limits import LimitExceeded

log = logging.getLogger(__name__)

#: The port of a cluster's Spark Connect endpoint on a sandbox's own loopback.
SANDBOX_CONNECT_PORT = 15002


class Executor(Protocol):
    """Runs the notebook of an attempt somewhere. None of the methods changes the run's
    state: they return what happened, and ``execute_run`` publishes it."""

    def acquire_target(self, attempt: Attempt) -> SparkTarget:
        """The Spark target of the attempt, started if it is the run's own. Raises
        SparkTargetError."""
        ...

    def run(self, attempt: Attempt) -> Outcome:
        """Execute the attempt's notebook on ``attempt.target``, calling
        ``attempt.heartbeat`` at least every RUN_HEARTBEAT_INTERVAL seconds and stopping
        when it says so. Never raises for notebook, kernel or cluster failures."""
        ...

    def release_target(self, attempt: Attempt, outcome: Outcome | None) -> None:
        """Let go of the target: end a cluster started for the run. ``outcome`` is None
        when the run never ran (the target could not be acquired)."""
        ...


def executor_for(job: Job) -> Executor:
    """The executor of ``job``'s Spark target."""
    if job.spark_target == Job.SparkTarget.EMR_CLUSTER:
        return EmrExecutor()
    return LocalExecutor()


def connect_user_id(run: Run) -> str:
    """The Spark Connect user id of ``run``'s sessions: its job owner's, ``u<user id>``."""
    return f"u{run.job.owner_id}"


def _record_cluster(run: Run, cluster: Cluster) -> None:
    Run.objects.filter(pk=run.pk, attempt=run.attempt).update(cluster=cluster)


def _launch_for_run(attempt: Attempt, backend: str, reuse_ready: bool = False) -> Cluster:
    """``launch_cluster_for_run`` on ``backend``; a refusal (backend not enabled, a cap
    full, the owner's budget) is a SparkTargetError with its message, to be retried only
    when a cap may free up."""
    try:
        return cluster_services.launch_cluster_for_run(
            attempt.run,
            backend,
            margin_seconds=cluster_services.RUN_CLUSTER_MARGIN_SECONDS[backend],
            reuse_ready=reuse_ready,
        )
    except cluster_services.ClusterError as exc:
        raise SparkTargetError(str(exc), retry=exc.retry) from exc
    except LimitExceeded as exc:
        raise SparkTargetError(exc.message) from exc


class LocalExecutor:
    """The kernel in a sandbox of its own on this worker's host.

    The sandbox runs as the job owner's uid with no network; for a cluster target it
    reaches exactly that cluster's Spark Connect endpoint, as ``sc://localhost:15002``
    with the cluster's token and a Spark Connect session id of this attempt's own, whose
    operations are interrupted and released on the server when the attempt ends, however
    it ends. When no sandbox can be made the outcome is FAILED with the reason (fail
    closed: nothing runs unsandboxed unless KERNEL_SANDBOX=none).
    """

    def acquire_target(self, attempt: Attempt) -> SparkTarget:
        """The embedded local master; the job's cluster (READY, local, the owner's); or a
        fresh local cluster started and awaited here, in the run's worker, reusing one a
        previous attempt left READY. A fresh cluster lives the run's timeout plus ten
        minutes, so expiry stops it even if this worker dies."""
        run, job = attempt.run, attempt.run.job
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
            _record_cluster(run, cluster)
            return SparkTarget(cluster.connect_url, cluster, owned=False)
        if job.spark_target == Job.SparkTarget.NEW_CLUSTER:
            cluster = self._fresh_cluster(attempt)
            _record_cluster(run, cluster)
            return SparkTarget(cluster.connect_url, cluster, owned=True)
        return SparkTarget(settings.LOCAL_SPARK_MASTER)

    @staticmethod
    def _fresh_cluster(attempt: Attempt) -> Cluster:
        cluster = _launch_for_run(attempt, Cluster.Backend.LOCAL, reuse_ready=True)
        if cluster.state == Cluster.State.READY:  # left by a previous attempt
            return cluster
        cluster_services.start_cluster(cluster.pk)

        def still_mine() -> None:
            # Keep the run's heartbeat going while the cluster starts, and give up at once
            # if the run was cancelled or taken over meanwhile.
            answer = attempt.heartbeat(Progress())
            if answer == TickAnswer.CANCEL:
                raise cluster_services.ClusterError(
                    "The run was cancelled while its cluster was starting."
                )
            if answer == TickAnswer.LOST:
                raise cluster_services.ClusterError("The run was taken over by another attempt.")

        try:
            return cluster_services.wait_until_ready(
                cluster, timeout=settings.CLUSTER_START_TIMEOUT, on_poll=still_mine
            )
        except cluster_services.ClusterError as exc:
            cluster_services.terminate_now(cluster, str(exc))
            raise SparkTargetError(str(exc), retry=True) from exc

    def run(self, attempt: Attempt) -> Outcome:
        run, target = attempt.run, attempt.target
        assert target is not None  # acquire_target ran
        cluster = target.cluster
        owner_id = run.job.owner_id
        for earlier in range(1, run.attempt):  # what a killed worker's attempt left behind
            kernel.run_sandbox(f"r{run.pk}-a{earlier}", owner_id).destroy()
        session_id = str(uuid.uuid5(run.uuid, f"attempt-{run.attempt}"))
        extra_env = {"TELEMETRY_VIEWS_ROOT": kernel.views_root(owner_id)}  # its only views
        continuous = run.trigger == Run.Trigger.CONTINUOUS
        try:
            # A continuous run's checkpoint and sink outlive its sandbox (jobs.services.streams).
            durable = tuple(map(str, prepare_stream_dirs(run.job))) if continuous else ()
            sandbox = kernel.run_sandbox(
                attempt.name,
                owner_id,
                forward_port=SANDBOX_CONNECT_PORT if cluster is not None else None,
                spark_ui=cluster is None,
                durable=durable,
            )
            sandbox.prepare()
            # The embedded local Spark keeps an event log: the run's Spark history.
            spark_conf = spark_ui.event_log_conf(sandbox) if cluster is None else None
        except (SandboxUnavailable, OSError, ValueError) as exc:
            log.error("no sandbox run=%s: %s", run.pk, exc)
            return Outcome(OutcomeStatus.FAILED, message=str(exc))
        master = target.master
        # The driver's log4j output goes to the sandbox's logs directory (jobs.kernel).
        extra_env["PORTAL_DRIVER_LOG"] = str(logs.driver_log_path(sandbox))
        stop_file = sandbox.home / kernel.STOP_FLAG_NAME
        progress_file = sandbox.home / PROGRESS_FILE_NAME
        if continuous:
            extra_env["PORTAL_STOP_FILE"] = str(stop_file)
            # Live metrics: the kernel's helper appends its queries' progress there.
            extra_env["PORTAL_PROGRESS_FILE"] = str(progress_file)
        try:
            collector = logs.Collector.for_attempt(run, sandbox, cluster, fresh=target.owned)
        except OSError as exc:
            sandbox.destroy()
            return Outcome(OutcomeStatus.INFRA_ERROR, message=f"Could not prepare the logs: {exc}")

        # Read beneath the sandbox's directory, as the logs are (user code writes it): a
        # file of the sandbox's uid (or the worker's own, when unsandboxed).
        uids = {os.geteuid(), sandbox.spec.uid} if sandbox.enabled else {os.geteuid()}
        tail = ProgressTail(sandbox.dir, (sandbox.home.name, PROGRESS_FILE_NAME), uids)

        def heartbeat(progress: Progress) -> TickAnswer:
            answer = attempt.heartbeat(progress)
            if answer == TickAnswer.CONTINUE:  # only while the attempt owns the run
                collector.maybe_upload()
            if continuous and answer in (TickAnswer.CONTINUE, TickAnswer.STOP):
                try:
                    if tail.poll():
                        record_stream_progress(run, tail)
                except Exception:  # live metrics never stop the heartbeat
                    log.exception("could not record the stream progress of run=%s", run.pk)
            return answer

        try:
            if cluster is not None:
                host, port = cluster.connect_address
                if sandbox.enabled:
                    sandbox.relay(host, port)
                    port = SANDBOX_CONNECT_PORT
                # pyspark sends a token without TLS only to the host "localhost". A session
                # is (user id, session id) on the server: name both, so the worker can end it.
                user_id = connect_user_id(run)
                master = f"sc://localhost:{port}/;session_id={session_id};user_id={user_id}"
                extra_env["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = cluster.connect_token
        except (SandboxUnavailable, OSError) as exc:
            sandbox.destroy()
            message = f"Could not reach the cluster's Spark Connect endpoint: {exc}"
            return Outcome(OutcomeStatus.FAILED, message=message)
        try:
            return executor.execute(
                attempt.source,
                attempt.output,
                run.injected_parameters(master),
                spark_master=master,
                sandbox=sandbox,
                timeout_seconds=run.timeout_seconds,
                tick=heartbeat,
                tick_interval=settings.RUN_HEARTBEAT_INTERVAL,
                lease_seconds=settings.RUN_STALE_AFTER,
                partial_path=attempt.partial.path,
                partial_interval=settings.RUN_PARTIAL_SAVE_INTERVAL,
                kernel_extra_env=extra_env,
                spark_conf=spark_conf,
                stop_file=stop_file if continuous else None,
                stop_timeout=settings.STREAM_STOP_TIMEOUT,
                # The heartbeat used the database from the monitor thread: close its
                # connections, or they stay open until the process ends.
                on_monitor_exit=connections.close_all,
            )
        finally:
            try:
                # Every process has had its last word: store the logs before the sandbox,
                # and its files, go (``upload`` stores nothing for a lost attempt).
                collector.upload(final=True)
                if cluster is None:
                    spark_ui.store_event_log(run, sandbox, collector.masker)
            except Exception:
                log.exception("could not store the logs of run=%s", run.pk)
            sandbox.destroy()
            attempt.cpu_seconds = sandbox.cpu_seconds  # read from its cgroup by destroy()
            if cluster is not None:
                end_connect_session(cluster, session_id, connect_user_id(run))

    def release_target(self, attempt: Attempt, outcome: Outcome | None) -> None:
        target = attempt.target
        if target is not None and target.owned and target.cluster is not None:
            cluster_services.terminate_now(target.cluster, "The run it was started for ended.")


class EmrExecutor:
    """The notebook as the one step of a transient EMR cluster started for the run.

    The cluster terminates itself when its step ends; a cancelled, timed-out or lost run
    terminates it at once. The output notebook is read back from S3.
    """

    def acquire_target(self, attempt: Attempt) -> SparkTarget:
        """A PENDING EMR cluster row for this attempt (launched by ``run``, with its
        step), living the run's timeout plus half an hour (a continuous run's:
        STREAM_EMR_LIFETIME_HOURS, ``EmrStream``)."""
        cluster = _launch_for_run(attempt, Cluster.Backend.EMR)
        _record_cluster(attempt.run, cluster)
        return SparkTarget("yarn", cluster, owned=True)

    def run(self, attempt: Attempt) -> Outcome:
        run, target = attempt.run, attempt.target
        assert target is not None and target.cluster is not None  # acquire_target ran
        cluster = target.cluster
        backend = EmrBackend()
        files = emr_runner.StepFiles.for_attempt(run.uuid, run.attempt)
        s3 = emr_runner.s3_client()
        stream = EmrStream(s3, files, cluster) if run.trigger == Run.Trigger.CONTINUOUS else None
        try:
            if stream is not None:
                stream.prepare(run)
            files.upload(s3, attempt.source.read_bytes(), run.injected_parameters(target.master))
            step = files.step(
                f"Run {run.pk} of job {run.job_id}", env=stream.env if stream else None
            )
            info = backend.start(cluster, steps=[step], keep_alive=False)
        except (ClientError, BotoCoreError, BackendError, ValueError) as exc:
            message = f"Could not launch the EMR job cluster: {exc}"[:500]
            return Outcome(OutcomeStatus.INFRA_ERROR, message=message)
        cluster_services.record_launch(cluster, info)
        collector = logs.StepLogCollector.for_step(run, cluster, s3, info["jobflow_id"])
        try:
            ended = self._wait_for_step(attempt, backend, collector, stream)
            if isinstance(ended, OutcomeStatus):
                message = stop_message(ended, run.timeout_seconds)
                if stream is not None and ended == OutcomeStatus.CANCELLED and stream.overdue():
                    message = stream.overdue_message()
                return Outcome(ended, message=message)
            cluster_services.sync_cluster(cluster)
            outcome = emr_runner.outcome_of_step(s3, files, ended, attempt.output)
            if stream is not None and outcome.status == OutcomeStatus.SUCCEEDED:
                outcome.stopped = stream.reason == EmrStream.REQUESTED
                if stream.reason == EmrStream.ROTATED:
                    outcome.message = EmrStream.ROTATED_MESSAGE
            return outcome
        finally:
            try:
                # What EMR has copied of the step's logs so far (``upload`` stores nothing
                # for a lost attempt).
                collector.upload(final=True)
            except Exception:
                log.exception("could not store the logs of run=%s", run.pk)

    @staticmethod
    def _wait_for_step(
        attempt: Attempt,
        backend: EmrBackend,
        collector: logs.StepLogCollector,
        stream: "EmrStream | None" = None,
    ) -> str | OutcomeStatus:
        """Poll the step of job flow ``collector.jobflow_id`` every EMR_STEP_POLL_INTERVAL
        seconds until it ends: its final EMR state, or the OutcomeStatus that stopped the
        wait (cancel, lost, timeout; for a continuous run, a stop not done within
        STREAM_STOP_TIMEOUT is a cancel). Records the step id in ``collector`` once EMR
        names it, and has it store the step's logs now and then while the attempt owns the
        run. A continuous run's ``stream`` gets its stop flag when the run is asked to
        stop (``TickAnswer.STOP``) or its cluster nears the end of its lifetime."""
        progress = Progress(cells_total=1)
        deadline = time.monotonic() + attempt.run.timeout_seconds
        step_id = None
        while True:
            answer = attempt.heartbeat(progress)
            if answer in executor.STOPPED_BY:
                return executor.STOPPED_BY[answer]
            if stream is not None:
                if answer == TickAnswer.STOP:
                    stream.stop(EmrStream.REQUESTED)
                elif stream.lifetime_ending():
                    stream.stop(EmrStream.ROTATED)
                if stream.overdue():
                    return OutcomeStatus.CANCELLED
            if time.monotonic() > deadline:
                return OutcomeStatus.TIMED_OUT
            collector.maybe_upload()
            try:
                step_id, state = backend.step_state(collector.jobflow_id, step_id)
            except BackendError as exc:
                log.warning("EMR step poll failed run=%s: %s", attempt.run.pk, exc)
                state = "UNKNOWN"
            collector.step_id = step_id or ""
            if state == "RUNNING":
                progress.current_head = "EMR step running papermill"
            if state in emr_runner.STEP_DONE | emr_runner.STEP_FAILED:
                return state
            time.sleep(settings.EMR_STEP_POLL_INTERVAL)

    def release_target(self, attempt: Attempt, outcome: Outcome | None) -> None:
        reasons = {
            OutcomeStatus.CANCELLED: "Run cancelled.",
            OutcomeStatus.TIMED_OUT: "Run timed out.",
            OutcomeStatus.LOST: "Run lost.",
        }
        target = attempt.target
        if outcome is not None and outcome.status in reasons and target and target.cluster:
            cluster_services.terminate_now(target.cluster, reasons[outcome.status])


class EmrStream:
    """A continuous run on a transient EMR cluster: its checkpoint and sink in S3, its stop
    flag, and its rotation.

    - ``prepare`` deletes what earlier checkpoint generations left under the job's S3
      prefix (a reset starts from scratch, sink included), as ``prepare_stream_dirs`` does
      on disk.
    - ``env`` names the stop flag for the step's kernel: ``PORTAL_STOP_FILE`` =
      ``s3://<job bucket>/runs/<uuid>/attempt-<n>/stop``, which
      ``telemetry.streaming.run_until_stopped`` polls on the cluster.
    - ``stop(reason)`` creates the flag once: REQUESTED (Stop, a new version) or ROTATED:
      STREAM_STOP_TIMEOUT plus ten minutes before the cluster's ``expires_at``
      (STREAM_EMR_LIFETIME_HOURS after launch) so that the run ends SUCCEEDED and the
      supervisor starts the next one at once, on a fresh cluster, from the checkpoint.
    - ``overdue``: the flag is older than STREAM_STOP_TIMEOUT seconds; the run is then
      cancelled (its cluster terminated).

    Live metrics are not read on EMR: the progress file stays on the cluster's master.
    """

    REQUESTED = "requested"
    ROTATED = "rotated"
    ROTATED_MESSAGE = "The cluster's lifetime was reached: restarted on a fresh cluster."
    #: Seconds before the cluster's expiry, beyond STREAM_STOP_TIMEOUT, at which it rotates.
    ROTATION_MARGIN = 600

    def __init__(self, s3: Any, files: emr_runner.StepFiles, cluster: Cluster) -> None:
        self.s3, self.files, self.cluster = s3, files, cluster
        self.reason = ""
        self._asked_at: float | None = None
        self._written = False

    @property
    def env(self) -> dict[str, str]:
        """The step's environment: the stop flag, and the region its kernel's S3 client
        needs (a node's environment need not name one; VPC gateway endpoints are
        regional)."""
        return {
            "PORTAL_STOP_FILE": self.files.uri("stop"),
            "AWS_DEFAULT_REGION": settings.EMR_REGION,
        }

    def prepare(self, run: Run) -> None:
        """Before ``run``'s cluster starts: terminate the clusters of the job's earlier
        continuous runs that are still live (a worker that died left its run LOST and its
        cluster running the old step, which would go on writing the same checkpoint),
        then delete older generations under ``job.stream_s3_prefix``. Raises ValueError,
        ClientError or BotoCoreError."""
        job = run.job
        earlier = Cluster.objects.live().filter(
            for_run__job_id=job.pk, for_run__trigger=Run.Trigger.CONTINUOUS
        )
        for cluster in earlier.exclude(for_run_id=run.pk):
            log.warning("terminating cluster=%s of an earlier run of job=%s", cluster.pk, job.pk)
            cluster_services.terminate_now(cluster, "The job's next run replaced it.")
        try:
            emr_runner.remove_s3_prefix(self.s3, job.stream_s3_prefix, keep=job.stream_locations())
        except OSError as exc:  # left for the next run's preparation, as on disk
            log.warning("could not remove older generations of job=%s: %s", job.pk, exc)

    def lifetime_ending(self) -> bool:
        """Whether the cluster's expiry (read from its row: staff may have moved it) is
        within STREAM_STOP_TIMEOUT plus ROTATION_MARGIN seconds."""
        expires_at = (
            Cluster.objects.filter(pk=self.cluster.pk).values_list("expires_at", flat=True).first()
        )
        if expires_at is None:
            return False
        margin = settings.STREAM_STOP_TIMEOUT + self.ROTATION_MARGIN
        return (expires_at - timezone.now()).total_seconds() <= margin

    def stop(self, reason: str) -> None:
        """Ask the run to stop for ``reason``: the stop timeout starts at the first call,
        and the flag is written once (a failed put is tried again at the next poll,
        within that timeout). A request (REQUESTED) after a rotation began takes over
        its reason: the job was paused, the run did not end for a new cluster."""
        if self._asked_at is None:
            self._asked_at = time.monotonic()
        if not self.reason or reason == self.REQUESTED:
            self.reason = reason
        if self._written:
            return
        try:
            self.files.request_stop(self.s3)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not write the stop flag %s: %s", self.files.uri("stop"), exc)
            return
        self._written = True
        log.info("stop flag written (%s) %s", reason, self.files.uri("stop"))

    def overdue(self) -> bool:
        """Whether STREAM_STOP_TIMEOUT seconds passed since the stop was first asked."""
        return (
            self._asked_at is not None
            and time.monotonic() - self._asked_at > settings.STREAM_STOP_TIMEOUT
        )

    def overdue_message(self) -> str:
        """The reason of a run killed because it did not stop in time."""
        why = "its cluster's lifetime ended" if self.reason == self.ROTATED else "it was asked"
        timeout = settings.STREAM_STOP_TIMEOUT
        return f"Not stopped within {timeout:g} s after {why}: killed with its cluster."
