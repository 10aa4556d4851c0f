"""Scheduled notebooks: jobs, their notebook versions, and runs.

Models hold state and pure transitions that touch only the row. Everything that changes
several rows, storage or the queue lives in ``jobs.services``.
"""

import statistics
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from jobs import notebooks, schedule
from jobs.validators import (
    CronValidator,
    TimezoneValidator,
    split_addresses,
    validate_address_list,
)
from portal.sandbox import streams_root


class JobQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Jobs ``user`` may see: their own, shared ones, and all of them for staff."""
        if user.is_staff:
            return self
        return self.filter(Q(owner=user) | Q(visibility=Job.Visibility.SIGNED_IN))

    def owned_by(self, user):
        """Jobs ``user`` may change: their own, and all of them for staff."""
        if user.is_staff:
            return self
        return self.filter(owner=user)

    def due(self, now: datetime):
        """Enabled, scheduled jobs whose next slot is at or before ``now`` (UTC)."""
        return self.filter(enabled=True, next_run_at__isnull=False, next_run_at__lte=now)


#: Retries a job may ask for after infrastructure failures.
MAX_RETRIES = 5

#: The timeout of a continuous job's runs, in seconds: none in effect (the largest value
#: the column holds, 68 years). A continuous run ends when it is stopped, fails or is
#: lost; its heartbeat keeps the reaper away.
CONTINUOUS_TIMEOUT_SECONDS = 2**31 - 1
#: Seconds between the progress events Spark reports for an idle streaming query (the
#: default of ``spark.sql.streaming.noDataProgressEventInterval``, 10 s).
STREAM_IDLE_EVENT_SECONDS = 10.0


class Job(models.Model):
    """A notebook with a schedule, parameters and run settings, owned by one user."""

    class ScheduleKind(models.TextChoices):
        MANUAL = "manual", "Manual only (no schedule)"
        HOURLY = "hourly", "Hourly"
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"
        MONTHLY = "monthly", "Monthly"
        CRON = "cron", "Cron expression"

    class CatchUp(models.TextChoices):
        LATEST = "latest", "Run the latest missed slot once"
        ALL = "all", "Run every missed slot"
        NONE = "none", "Skip missed slots"

    class Overlap(models.TextChoices):
        SKIP = "skip", "Skip a slot while the previous run is active"
        ALLOW = "allow", "Run slots concurrently"

    class Visibility(models.TextChoices):
        PRIVATE = "private", "Private (me and staff)"
        SIGNED_IN = "signed_in", "Everyone signed in"

    class SparkTarget(models.TextChoices):
        LOCAL = "local", "Embedded local Spark"
        CLUSTER = "cluster", "One of my running clusters"
        NEW_CLUSTER = "new_cluster", "A fresh local cluster for each run"
        EMR_CLUSTER = "emr_cluster", "A transient EMR cluster for each run"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="jobs",
        help_text="Who owns the job.",
    )
    name = models.CharField(max_length=200, help_text="A short name for the job.")
    description = models.TextField(
        blank=True, help_text="What the notebook does; shown in alert e-mails."
    )
    schedule_kind = models.CharField(
        max_length=10,
        choices=ScheduleKind.choices,
        default=ScheduleKind.MANUAL,
        help_text="How the schedule was chosen.",
    )
    cron = models.CharField(
        max_length=120,
        blank=True,
        validators=[CronValidator()],
        help_text=(
            "5-field cron expression of the schedule, in the job's time zone; "
            "empty for manual jobs."
        ),
    )
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[TimezoneValidator()],
        help_text="IANA time zone the schedule is read in.",
    )
    parameters = models.JSONField(
        default=dict,
        blank=True,
        help_text="Parameter values injected into the notebook (name to JSON value).",
    )
    timeout_seconds = models.PositiveIntegerField(
        default=3600, help_text="A run still going after this many seconds ends TIMED_OUT."
    )
    expected_duration_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds a run usually takes; a run going past it fires the notification "
        "“ran longer than expected” (once per run). Empty: no such notification.",
    )
    max_retries = models.PositiveSmallIntegerField(
        default=1,
        validators=[MaxValueValidator(MAX_RETRIES)],
        help_text=(
            "Retries after infrastructure failures (worker lost, kernel died); "
            "not after notebook errors."
        ),
    )
    catchup = models.CharField(
        max_length=10,
        choices=CatchUp.choices,
        default=CatchUp.LATEST,
        help_text="What to do with slots missed while the portal was down.",
    )
    overlap = models.CharField(
        max_length=10,
        choices=Overlap.choices,
        default=Overlap.SKIP,
        help_text="What to do when a slot comes while a run is active.",
    )
    visibility = models.CharField(
        max_length=10,
        choices=Visibility.choices,
        default=Visibility.PRIVATE,
        help_text="Who may see the job's results.",
    )
    spark_target = models.CharField(
        max_length=12,
        choices=SparkTarget.choices,
        default=SparkTarget.LOCAL,
        help_text="Where the notebook's Spark session runs.",
    )
    cluster = models.ForeignKey(
        "clusters.Cluster",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        help_text="The running cluster runs connect to (Spark target 'cluster').",
    )
    cluster_size = models.PositiveSmallIntegerField(
        default=1,
        help_text="Workers of the fresh cluster started for each run (Spark target 'new_cluster').",
    )
    notify_on_failure = models.TextField(
        blank=True,
        validators=[validate_address_list],
        help_text="Comma-separated e-mail addresses told when a run fails; empty means nobody.",
    )
    notify_on_success = models.TextField(
        blank=True,
        validators=[validate_address_list],
        help_text="Comma-separated e-mail addresses told when a run succeeds; empty means nobody.",
    )
    output_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days each run's output is kept; empty for the portal's default "
        "(RUN_OUTPUT_RETENTION_DAYS), 0 to keep outputs forever.",
    )
    enabled = models.BooleanField(
        default=True, help_text="Paused jobs keep their schedule but start no runs."
    )
    continuous = models.BooleanField(
        default=False,
        help_text="Keep one run active at all times (streaming queries): the portal restarts "
        "a run that fails or is lost, with backoff, on the ``streams`` queue. No schedule.",
    )
    stream_max_failures = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Continuous job: after this many failed or lost runs within the failure "
        "window, the job is paused and its failure list alerted.",
    )
    stream_failure_window_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 60)],
        help_text="Continuous job: the window (minutes) in which failures are counted.",
    )
    checkpoint_generation = models.PositiveIntegerField(
        default=1,
        help_text="Continuous job: the generation of its checkpoint directory; “Reset "
        "checkpoint” moves to the next one, which starts empty.",
    )
    stream_key = models.UUIDField(
        default=uuid.uuid4,
        editable=False,
        unique=True,
        help_text="Continuous job on EMR: the random name of its S3 prefix of checkpoints "
        "and sinks (``Job.stream_s3_prefix``), which no other job's cluster can guess.",
    )
    stream_paused_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the supervisor last paused the continuous job after too many "
        "failures (UTC); failures before it no longer count.",
    )
    next_run_at = models.DateTimeField(
        null=True,
        blank=True,
        db_index=True,
        help_text="The next scheduled slot (UTC); empty for manual or paused jobs.",
    )
    created_at = models.DateTimeField(
        auto_now_add=True, help_text="When the job was created (UTC)."
    )
    updated_at = models.DateTimeField(
        auto_now=True, help_text="When the job was last changed (UTC)."
    )

    #: The fields its owner sets: the job form's, and what ``services.update_job`` saves.
    SETTINGS_FIELDS = (
        "name",
        "description",
        "schedule_kind",
        "cron",
        "timezone",
        "parameters",
        "timeout_seconds",
        "expected_duration_seconds",
        "max_retries",
        "catchup",
        "overlap",
        "visibility",
        "notify_on_failure",
        "notify_on_success",
        "output_retention_days",
        "enabled",
        "spark_target",
        "cluster",
        "cluster_size",
        "continuous",
        "stream_max_failures",
        "stream_failure_window_minutes",
    )

    #: The Spark targets a continuous job may use whose nodes see the worker host's disk
    #: (``STREAMS_ROOT``). Also a transient EMR cluster when STREAMS_S3_URI is set: its
    #: checkpoint lives in S3 and each run's cluster lives STREAM_EMR_LIFETIME_HOURS.
    CONTINUOUS_TARGETS = (SparkTarget.LOCAL, SparkTarget.CLUSTER)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="job_due_idx")]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("jobs-detail", args=[self.pk])

    @property
    def is_scheduled(self) -> bool:
        return bool(self.cron)

    def clean(self) -> None:
        """Normalise the cron expression to single spaces, and refuse a fresh cluster per
        run on a backend this portal does not offer (CLUSTER_BACKENDS). The form and the
        admin call this after the fields' validators; ``services.create_job`` and
        ``update_job`` call ``check_spark_target``. Raises ValidationError."""
        self.cron = " ".join(self.cron.split())
        self.check_spark_target()
        self.check_continuous()

    def check_continuous(self) -> None:
        """Raise ValidationError if the job is continuous and has a schedule, or a Spark
        target that starts a cluster for each run (``CONTINUOUS_TARGETS``), but for a
        transient EMR cluster when STREAMS_S3_URI is set, for a private job only."""
        if not self.continuous:
            return
        if self.cron:
            raise ValidationError(
                {"schedule_kind": "A continuous job has no schedule: choose “Manual only”."}
            )
        if self.spark_target == self.SparkTarget.EMR_CLUSTER and settings.STREAMS_S3_URI:
            # Its checkpoint and sink live in S3 (``stream_locations``), under a key that
            # only its runs' outputs show: anyone who read them could, from a cluster of
            # their own (one instance profile for all), read or rewrite the checkpoint.
            if self.visibility != self.Visibility.PRIVATE:
                raise ValidationError(
                    {
                        "visibility": "A continuous job on EMR is private: its runs show "
                        "where its checkpoint is, which any EMR cluster could write."
                    }
                )
            return
        if self.spark_target not in self.CONTINUOUS_TARGETS:
            where = ", or on a transient EMR cluster" if settings.STREAMS_S3_URI else ""
            raise ValidationError(
                {
                    "spark_target": "A continuous job runs on the embedded local Spark or "
                    f"on one of your running clusters{where}."
                }
            )

    @property
    def checkpoint_dir(self) -> Path:
        """The continuous job's durable checkpoint directory on the worker host's disk
        (``Job.stream_dir/checkpoint-<generation>``), bound writable into its
        runs' sandboxes and injected as the parameter ``checkpoint_dir``."""
        return self.stream_dir / f"checkpoint-{self.checkpoint_generation}"

    @property
    def output_dir(self) -> Path:
        """The continuous job's durable sink directory beside its checkpoint
        (``Job.stream_dir/output-<generation>``), bound writable into its runs'
        sandboxes and injected as the parameter ``output_dir``. A reset of the checkpoint
        starts a new one too: a file sink's own log (``_spark_metadata``) counts the
        batches of one checkpoint, and would skip a new checkpoint's first batches."""
        return self.stream_dir / f"output-{self.checkpoint_generation}"

    @property
    def streams_in_s3(self) -> bool:
        """Whether the continuous job's checkpoint and sink live in S3 (under
        STREAMS_S3_URI) rather than on the worker host's disk: on a transient EMR cluster,
        whose nodes cannot see that disk."""
        return self.spark_target == self.SparkTarget.EMR_CLUSTER and bool(settings.STREAMS_S3_URI)

    @property
    def stream_s3_prefix(self) -> str:
        """The job's S3 prefix of checkpoints and sinks, ``STREAMS_S3_URI<stream_key>/``
        (``s3://bucket/key/``), whatever its target now is (a job moved off EMR keeps what
        it left there until it is deleted). The clusters share one instance profile, which
        may list only below such a prefix (docs/emr-iam.md): a random key, not the job's
        id, keeps other users' clusters from finding it."""
        base = settings.STREAMS_S3_URI.rstrip("/")
        return f"{base}/{self.stream_key.hex}/"

    def stream_locations(self) -> tuple[str, str]:
        """``(checkpoint_dir, output_dir)`` as the job's runs receive them: the S3 URIs
        ``stream_s3_prefix`` + ``checkpoint-<n>`` / ``output-<n>`` for a job whose streams
        live in S3 (``streams_in_s3``), else the paths ``checkpoint_dir``, ``output_dir``
        on the worker host's disk."""
        if self.streams_in_s3:
            generation = self.checkpoint_generation
            prefix = self.stream_s3_prefix
            return f"{prefix}checkpoint-{generation}", f"{prefix}output-{generation}"
        return str(self.checkpoint_dir), str(self.output_dir)

    @property
    def stream_dir(self) -> Path:
        """The continuous job's directory of checkpoints and sinks,
        ``STREAMS_ROOT/<owner id>/job-<id>`` (under its owner's ``sandbox.streams_root``,
        which the owner's local clusters write)."""
        return streams_root(self.owner_id) / f"job-{self.pk}"

    #: The cluster backend each per-run Spark target starts its cluster on.
    RUN_CLUSTER_BACKENDS: dict[str, str] = {
        SparkTarget.NEW_CLUSTER: "local",
        SparkTarget.EMR_CLUSTER: "emr",
    }

    def check_spark_target(self) -> None:
        """Raise ValidationError (field "spark_target") if the job's per-run cluster needs a
        backend that is not enabled in CLUSTER_BACKENDS."""
        backend = self.RUN_CLUSTER_BACKENDS.get(self.spark_target)
        if backend is not None and backend not in settings.CLUSTER_BACKENDS:
            label = self.SparkTarget(self.spark_target).label
            raise ValidationError(
                {"spark_target": f"“{label}” is not offered by this portal: choose another."}
            )

    def can_change(self, user) -> bool:
        """Whether ``user`` may change the job and act on its runs: its owner and staff
        (the rule of ``JobQuerySet.owned_by``)."""
        return bool(user.is_staff or self.owner_id == user.pk)

    def reschedule(self, now: datetime) -> None:
        """Set ``next_run_at`` to the first slot after ``now`` (UTC), or None for a manual
        or paused job. The one place that moves the next run; the caller saves the row."""
        self.next_run_at = self.next_slot_after(now) if self.enabled else None

    def next_slot_after(self, moment: datetime) -> datetime | None:
        """The first slot strictly after ``moment``, as an aware UTC datetime; None if manual."""
        if not self.cron:
            return None
        return schedule.next_slot_after(self.cron, self.timezone, moment)

    def upcoming_slots(self, moment: datetime, count: int = 5) -> list[datetime]:
        """The next ``count`` slots after ``moment`` (UTC), for display."""
        if not self.cron:
            return []
        return schedule.upcoming_slots(self.cron, self.timezone, moment, count)

    @property
    def schedule_description(self) -> str:
        if not self.cron:
            return "Manual only"
        return schedule.describe(self.cron, self.timezone)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def recipients(self, which: str) -> list[str]:
        """Addresses for ``which`` in ("failure", "success"), de-duplicated, in order."""
        return split_addresses(
            self.notify_on_failure if which == "failure" else self.notify_on_success
        )

    def latest_version(self):
        return self.versions.order_by("-number").first()


class NotebookVersion(models.Model):
    """One immutable upload of a job's notebook. Runs record the version they used."""

    job = models.ForeignKey(
        Job,
        on_delete=models.CASCADE,
        related_name="versions",
        help_text="The job this notebook belongs to.",
    )
    number = models.PositiveIntegerField(help_text="1 for the first upload, then 2, 3...")
    storage_key = models.CharField(
        max_length=300, help_text="Key of the .ipynb in the portal's storage."
    )
    original_name = models.CharField(
        max_length=255, blank=True, help_text="The uploaded file's name (display only)."
    )
    size_bytes = models.PositiveIntegerField(help_text="Size of the notebook file in bytes.")
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the notebook file, hex.")
    cell_count = models.PositiveIntegerField(default=0, help_text="Number of cells.")
    code_cell_count = models.PositiveIntegerField(default=0, help_text="Number of code cells.")
    parameter_schema = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "Parameters read from the 'parameters'-tagged cell: name to {type, default, help}."
        ),
    )
    has_parameters_cell = models.BooleanField(
        default=True,
        help_text=(
            "Whether a cell is tagged 'parameters'. Without one, runs take any parameters "
            "and papermill injects them at the top of the notebook."
        ),
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who uploaded it.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was uploaded (UTC).")

    class Meta:
        ordering = ["job", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="unique_version_per_job")
        ]

    def __str__(self):
        return f"{self.job} v{self.number}"

    def coerce_parameters(self, values: dict) -> dict:
        """``values`` validated for this notebook (``notebooks.coerce_parameters``: its
        declared parameters, or any when it has no parameters cell); ParameterError."""
        return notebooks.coerce_parameters(
            self.parameter_schema or {}, values, free=not self.has_parameters_cell
        )


class RunQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Runs of jobs ``user`` may see."""
        if user.is_staff:
            return self
        return self.filter(Q(job__owner=user) | Q(job__visibility=Job.Visibility.SIGNED_IN))

    def owned_by(self, user):
        """Runs of jobs ``user`` may change (``JobQuerySet.owned_by``)."""
        if user.is_staff:
            return self
        return self.filter(job__owner=user)

    def active(self):
        return self.filter(state__in=Run.ACTIVE_STATES)

    def stale(self, now: datetime, stale_after: float):
        """RUNNING runs whose heartbeat (or start) is older than ``stale_after`` seconds."""
        cutoff = now - timedelta(seconds=stale_after)
        return self.filter(state=Run.State.RUNNING).filter(
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
        )

    def stuck_queued(self, now: datetime, queued_timeout: float):
        """QUEUED runs unclaimed ``queued_timeout`` s after they were enqueued and became due;
        held runs (waiting for their owner's concurrency limit, without a message) are not."""
        cutoff = now - timedelta(seconds=queued_timeout)
        return self.filter(
            state=Run.State.QUEUED, enqueued_at__lt=cutoff, held_since__isnull=True
        ).filter(Q(not_before__isnull=True) | Q(not_before__lt=cutoff))


class Run(models.Model):
    """One execution of a job's notebook: for a schedule slot, or started by hand."""

    class State(models.TextChoices):
        QUEUED = "QUEUED", "Queued"
        RUNNING = "RUNNING", "Running"
        SUCCEEDED = "SUCCEEDED", "Succeeded"
        FAILED = "FAILED", "Failed"
        TIMED_OUT = "TIMED_OUT", "Timed out"
        CANCELLED = "CANCELLED", "Cancelled"
        LOST = "LOST", "Lost"
        SKIPPED = "SKIPPED", "Skipped"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Run now"
        RERUN = "rerun", "Re-run"
        CLI = "cli", "Command line"
        BACKFILL = "backfill", "Backfill"
        BACKFILL_RERUN = "backfill-rerun", "Backfill re-run"
        SWEEP = "sweep", "Sweep"
        CONTINUOUS = "continuous", "Continuous"

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)
    FINAL_STATES = (
        State.SUCCEEDED,
        State.FAILED,
        State.TIMED_OUT,
        State.CANCELLED,
        State.LOST,
        State.SKIPPED,
    )
    #: Final states that alert the job's failure list and count as failures on /ops/.
    FAILURE_STATES = (State.FAILED, State.TIMED_OUT, State.LOST)
    SKIPPED_WHILE_ACTIVE = "Skipped: the previous run was still active."
    #: The reason of a continuous run that ended SUCCEEDED because it was asked to stop.
    STOPPED_ON_REQUEST = "Stopped on request."

    uuid = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text="Public id; names the run's files.",
    )
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="runs", help_text="The job this run belongs to."
    )
    version = models.ForeignKey(
        NotebookVersion,
        on_delete=models.PROTECT,
        related_name="runs",
        help_text="The notebook version executed.",
    )
    trigger = models.CharField(
        max_length=16, choices=Trigger.choices, help_text="What started the run."
    )
    scheduled_for = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The schedule slot (UTC) this run is for; empty for manual runs.",
    )
    parameters = models.JSONField(
        default=dict, blank=True, help_text="Parameter values injected into this run."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who started it by hand; empty for scheduled runs.",
    )
    state = models.CharField(
        max_length=10,
        choices=State.choices,
        default=State.QUEUED,
        db_index=True,
        help_text="Where the run is in its life.",
    )
    state_reason = models.CharField(
        max_length=300, blank=True, help_text="Why the run is in its state, when not obvious."
    )
    attempt = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker has claimed the run."
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=1, help_text="Claims allowed: 1 + the job's retries."
    )
    timeout_seconds = models.PositiveIntegerField(
        default=3600, help_text="Timeout of this run, copied from the job."
    )
    created_at = models.DateTimeField(
        auto_now_add=True, help_text="When the run row was created (UTC)."
    )
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the run was last put on the queue (UTC)."
    )
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="A retry waits until then (UTC)."
    )
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the current attempt started (UTC)."
    )
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When the run ended (UTC).")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the worker (UTC)."
    )
    worker = models.CharField(
        max_length=200, blank=True, help_text="Worker host and process running the attempt."
    )
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When someone asked to cancel (UTC)."
    )
    stop_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When someone asked a continuous run to stop gracefully (UTC): its "
        "worker then writes the stop flag its kernel watches.",
    )
    stream_progress = models.JSONField(
        default=dict,
        blank=True,
        help_text="Continuous run: its streaming queries' recent progress, as its worker "
        "read it from the kernel (jobs.stream_progress): the last points (time, query, "
        "rows/s in and processed, batch duration, watermark, state rows) and each query's "
        "sources with their end offsets.",
    )
    last_batch_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Continuous run: when its streaming queries last reported a batch (UTC).",
    )
    stream_event_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Continuous run: when its streaming queries last reported anything, a "
        "batch or being idle for want of new data (UTC).",
    )
    cells_total = models.PositiveIntegerField(
        default=0, help_text="Code cells to execute (with the injected one)."
    )
    cells_done = models.PositiveIntegerField(default=0, help_text="Code cells executed so far.")
    current_cell_index = models.IntegerField(
        null=True, blank=True, help_text="Index of the cell executing now."
    )
    current_cell_head = models.CharField(
        max_length=200, blank=True, help_text="First line of the cell executing now."
    )
    output_key = models.CharField(
        max_length=300, blank=True, help_text="Storage key of the output .ipynb."
    )
    html_key = models.CharField(
        max_length=300, blank=True, help_text="Storage key of the rendered output HTML."
    )
    output_gzip_key = models.CharField(
        max_length=300,
        blank=True,
        help_text="Storage key of the gzip copy of the output .ipynb (served to browsers "
        "that accept gzip); empty when it has none.",
    )
    html_gzip_key = models.CharField(
        max_length=300,
        blank=True,
        help_text="Storage key of the gzip copy of the rendered output HTML (served to "
        "browsers that accept gzip); empty when it has none.",
    )
    partial_key = models.CharField(
        max_length=300,
        blank=True,
        help_text="Storage key of the rendered partial output (HTML) while running.",
    )
    error_cell_index = models.IntegerField(
        null=True, blank=True, help_text="Index of the failing cell in the output notebook."
    )
    error_ename = models.CharField(
        max_length=200, blank=True, help_text="Exception name of the failure."
    )
    error_evalue = models.TextField(blank=True, help_text="Exception value of the failure.")
    error_traceback = models.TextField(
        blank=True, help_text="Traceback of the failure, without colour codes."
    )
    held_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Since when the QUEUED run waits, without a queue message, for one of its "
        "owner's running runs to end (the owner's concurrency limit); empty otherwise.",
    )
    wall_seconds = models.FloatField(
        null=True, blank=True, help_text="Wall-clock time of the attempts, in seconds."
    )
    cpu_seconds = models.FloatField(
        null=True,
        blank=True,
        help_text="CPU time (user + system) of the attempts' process trees, in seconds.",
    )
    node_hours = models.FloatField(
        null=True, blank=True, help_text="Node-hours of the cluster started for this run."
    )
    output_bytes = models.BigIntegerField(
        default=0,
        help_text="Bytes the run's stored files take (output .ipynb and HTML, and their "
        "gzip copies).",
    )
    output_expired_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the output was deleted by the retention policy (UTC).",
    )
    alert_sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the outcome e-mail went out (UTC); sent once."
    )
    cluster = models.ForeignKey(
        "clusters.Cluster",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The Spark cluster the run used; empty for the embedded local Spark.",
    )
    group = models.ForeignKey(
        "RunGroup",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The backfill or sweep the run belongs to; empty otherwise.",
    )
    waits_for_group = models.BooleanField(
        default=False,
        help_text="Held until its backfill or sweep has room under its own concurrency "
        "limit (then it is held, or not, like any run of its owner).",
    )
    logical_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The slot (UTC) a backfill re-run is for; the slot's own run keeps "
        "scheduled_for.",
    )

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One run per (job, slot), whoever creates it and however often.
            models.UniqueConstraint(
                fields=["job", "scheduled_for"],
                condition=Q(scheduled_for__isnull=False),
                name="unique_run_per_slot",
            ),
            # Exactly one active run per continuous job, whoever creates it.
            models.UniqueConstraint(
                fields=["job"],
                condition=Q(trigger="continuous", state__in=["QUEUED", "RUNNING"]),
                name="one_active_continuous_run",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "heartbeat_at"], name="run_state_heartbeat_idx"),
            models.Index(fields=["job", "state"], name="run_job_state_idx"),
            # Retention (oldest finished first) and the metrics' last hour of runs.
            models.Index(fields=["finished_at"], name="run_finished_idx"),
        ]

    def __str__(self):
        return f"run {self.pk} of {self.job}"

    def get_absolute_url(self):
        return reverse("runs-detail", args=[self.pk])

    @classmethod
    def build(
        cls,
        job: Job,
        *,
        trigger: str,
        version_id: int,
        parameters: dict,
        now: datetime,
        scheduled_for: datetime | None = None,
        created_by=None,
        state: str = State.QUEUED,
        reason: str = "",
    ) -> "Run":
        """An unsaved run of ``job``: the one constructor of runs, for every trigger.

        Attempts (1 + the job's retries) and the timeout are copied from the job. A QUEUED
        run is enqueued at ``now`` (UTC); a run created in a final state (SKIPPED, or FAILED
        for a schedule that cannot be computed) is finished at ``now``.
        """
        return cls(
            job=job,
            version_id=version_id,
            trigger=trigger,
            scheduled_for=scheduled_for,
            parameters=parameters,
            created_by=created_by,
            state=state,
            state_reason=reason,
            max_attempts=1 + job.max_retries,
            timeout_seconds=CONTINUOUS_TIMEOUT_SECONDS if job.continuous else job.timeout_seconds,
            enqueued_at=now if state == cls.State.QUEUED else None,
            finished_at=now if state in cls.FINAL_STATES else None,
        )

    @classmethod
    def for_slot(
        cls,
        job: Job,
        slot: datetime,
        version_id: int,
        *,
        active: bool,
        now: datetime,
        refused: str = "",
    ) -> "Run":
        """An unsaved run of ``job`` for its schedule slot ``slot`` (UTC), with the job's
        parameters: QUEUED; or SKIPPED when a run of the job is ``active`` and its overlap
        policy is "skip", or when a limit ``refused`` it (the reason)."""
        skipped = active and job.overlap == Job.Overlap.SKIP
        reason = refused or (cls.SKIPPED_WHILE_ACTIVE if skipped else "")
        return cls.build(
            job,
            trigger=cls.Trigger.SCHEDULE,
            version_id=version_id,
            parameters=dict(job.parameters),
            now=now,
            scheduled_for=slot,
            state=cls.State.SKIPPED if reason else cls.State.QUEUED,
            reason=reason,
        )

    @property
    def creation_message(self) -> str:
        """The text of the run's first event."""
        return self.state_reason or f"Created ({self.get_trigger_display()})."

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES

    @property
    def is_failure(self) -> bool:
        return self.state in self.FAILURE_STATES

    @property
    def is_queued(self) -> bool:
        return self.state == self.State.QUEUED

    @property
    def is_running(self) -> bool:
        return self.state == self.State.RUNNING

    def stream_rates(self) -> dict[str, float | None]:
        """The current rates of this run's streaming queries: ``input`` and ``processed``
        rows per second, summed over the newest batch of each query; None when no query
        reported one."""
        newest: dict[str, dict] = {}
        for point in (self.stream_progress or {}).get("points") or []:
            newest[point.get("query", "")] = point
        rates: dict[str, float | None] = {"input": None, "processed": None}
        fields = (("input", "inputRowsPerSecond"), ("processed", "processedRowsPerSecond"))
        for key, name in fields:
            values = [p[name] for p in newest.values() if p.get(name) is not None]
            rates[key] = sum(values) if values else None
        return rates

    def stream_interval(self) -> float | None:
        """The typical time between this run's progress reports, in seconds: the median
        gap between consecutive events of one query, batches and idle reports alike
        (``Run.stream_progress["events"]``, else its batch points; times as Spark stamped
        them). None before some query has reported twice. With data flowing it is the
        trigger interval the notebook chose (or the batch duration, when batches take
        longer), which the listener cannot read under Spark Connect; without data, the
        interval of Spark's idle reports. So a stream whose data comes once an hour is
        still flagged within a few idle intervals when it hangs."""
        from jobs.stream_progress import parse_time  # stream_progress reads runs' files

        progress = self.stream_progress or {}
        last: dict[str, datetime] = {}
        gaps: list[float] = []
        for point in progress.get("events") or progress.get("points") or []:
            at = parse_time(point.get("t"))
            if at is None:
                continue
            query = point.get("query", "")
            if query in last and at > last[query]:
                gaps.append((at - last[query]).total_seconds())
            last[query] = at
        return statistics.median(gaps) if gaps else None

    def stream_stalled(self, now: datetime, intervals: float, fallback: float) -> bool:
        """Whether this continuous run is RUNNING but its streaming queries have reported
        nothing (no batch, no idle event) for ``intervals`` trigger intervals
        (``stream_interval``, at least ``STREAM_IDLE_EVENT_SECONDS``: an idle query is
        reported only that often), plus one heartbeat (the worker reads the reports at
        each), counted from its start when they never reported. Before the interval is
        known (fewer than two batches) the limit is ``fallback`` seconds. An idle query
        (no new data) is not stalled: Spark reports it idle every
        ``spark.sql.streaming.noDataProgressEventInterval``."""
        if self.state != self.State.RUNNING or self.trigger != self.Trigger.CONTINUOUS:
            return False
        seen = self.stream_event_at or self.started_at
        if seen is None:
            return False
        interval = self.stream_interval()
        if interval is None:
            after = fallback
        else:
            after = intervals * max(interval, STREAM_IDLE_EVENT_SECONDS)
            after += settings.RUN_HEARTBEAT_INTERVAL
        return (now - seen).total_seconds() > after

    @property
    def expects_output(self) -> bool:
        """Whether the run was meant to produce an output notebook (not skipped or
        cancelled before one could exist)."""
        return self.state not in (self.State.SKIPPED, self.State.CANCELLED)

    @property
    def progress_percent(self) -> int:
        if self.state == self.State.SUCCEEDED:
            return 100
        if not self.cells_total:
            return 0
        return min(100, round(100 * self.cells_done / self.cells_total))

    @property
    def duration(self) -> timedelta | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return end - self.started_at

    @property
    def logical_date(self) -> datetime:
        """The moment the run is "for": its slot (or the slot a backfill re-runs), else its
        creation time (UTC)."""
        return self.scheduled_for or self.logical_at or self.created_at

    def injected_parameters(self, spark_master: str) -> dict:
        """The run's parameters plus what the portal injects into every run
        (``notebooks.RESERVED_PARAMETERS``): ``run_id`` (the run's UUID),
        ``logical_date`` (ISO 8601, UTC) and ``spark_master`` (what the kernel's Spark
        connects to); for a continuous run also ``notebooks.STREAM_PARAMETERS``
        (``Job.stream_locations``: paths on the worker's disk, or S3 URIs on EMR, which a
        notebook may declare with defaults of its own for development)."""
        values = {
            **self.parameters,
            "run_id": str(self.uuid),
            "logical_date": self.logical_date.isoformat(),
            "spark_master": spark_master,
        }
        if self.trigger == self.Trigger.CONTINUOUS:
            values["checkpoint_dir"], values["output_dir"] = self.job.stream_locations()
        return values


class RunEvent(models.Model):
    """An audited change of a run's state: claims, retries, reaping, the end."""

    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="events", help_text="The run that changed."
    )
    at = models.DateTimeField(auto_now_add=True, help_text="When it happened (UTC).")
    attempt = models.PositiveSmallIntegerField(help_text="The attempt the event belongs to.")
    state = models.CharField(
        max_length=10, choices=Run.State.choices, help_text="The state entered."
    )
    message = models.CharField(max_length=500, blank=True, help_text="What happened, for people.")
    worker = models.CharField(max_length=200, blank=True, help_text="The worker involved, if any.")

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.run_id} attempt {self.attempt}: {self.state}"


class RunGroup(models.Model):
    """Runs started together: a backfill (one run per schedule slot of a time range) or
    a parameter sweep (one run per combination of values), run at most
    ``max_concurrent`` at a time (``jobs.services.groups``)."""

    class Kind(models.TextChoices):
        BACKFILL = "backfill", "Backfill"
        SWEEP = "sweep", "Sweep"

    class Combine(models.TextChoices):
        GRID = "grid", "Every combination (grid)"
        ZIP = "zip", "Side by side (zip)"

    job = models.ForeignKey(
        Job,
        on_delete=models.CASCADE,
        related_name="groups",
        help_text="The job whose runs these are.",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, help_text="Backfill or sweep.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who started it.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it started (UTC).")
    max_concurrent = models.PositiveSmallIntegerField(
        default=2, help_text="At most this many of its runs are queued or running at once."
    )
    parameters = models.JSONField(
        default=dict,
        blank=True,
        help_text="Backfill: the values that override the job's for every run. Sweep: each "
        "swept parameter's list of values.",
    )
    combine = models.CharField(
        max_length=4,
        choices=Combine.choices,
        blank=True,
        help_text="Sweep: how the lists of values combine.",
    )
    range_start = models.DateTimeField(
        null=True, blank=True, help_text="Backfill: the first instant of the range (UTC)."
    )
    range_end = models.DateTimeField(
        null=True, blank=True, help_text="Backfill: the last instant of the range (UTC)."
    )
    rerun_existing = models.BooleanField(
        default=False,
        help_text="Backfill: slots that already had a run get a backfill re-run (else skipped).",
    )
    skipped_slots = models.PositiveIntegerField(
        default=0, help_text="Backfill: slots of the range left out because they had a run."
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_kind_display().lower()} {self.pk} of {self.job}"

    def get_absolute_url(self):
        return reverse("groups-detail", args=[self.pk])
