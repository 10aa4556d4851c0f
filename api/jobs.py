"""Jobs, notebook versions and runs in the API: the same rules as the pages.

Reads go through ``Job.objects.visible_to`` and ``Run.objects.visible_to``; changes through
``owned_by`` (owner or staff), so others' objects are 404, never 403. Every change is a
call to ``jobs.services`` (the same validation, limits and messages as the pages); the
services' input errors become 400 ``invalid`` naming the field (``service_errors``), and
their ``LimitExceeded`` a 403 or 429 (``api.errors``).

"Run now" (``POST /api/jobs/{id}/run/``) and "run a notebook file" (``POST /api/runs/``)
honour an ``Idempotency-Key`` header (``remembered_run``, ``idempotent_run``). The routes
are listed in docs/api.md.
"""

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max, QuerySet
from django.http.response import HttpResponseBase
from django.urls import path, reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from api.errors import ApiErrorSerializer, Conflict
from api.models import IdempotencyKey
from clusters.models import Cluster
from jobs import logs as job_logs
from jobs import notebooks, schedule, services
from jobs.downloads import attachment
from jobs.forms import NotebookField, NotebookUpload
from jobs.models import Job, NotebookVersion, Run, RunEvent
from jobs.render import standalone_chunks
from jobs.validators import split_addresses, validate_recipient_count
from recorded.models import RecordedValue

# --- Errors --------------------------------------------------------------------------------


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema of the error ``codes`` an operation may answer, besides 401 and 403 (a bad
    token, a missing scope, a limit), which every operation may."""
    described = {
        400: "Invalid input (code invalid), with the field at fault.",
        401: "No token, or a bad, expired or revoked one.",
        403: "The token lacks the scope, or a per-user limit refused the request.",
        404: "No such object, or not one the caller may see or change.",
        409: "The request conflicts with the object's state.",
        429: "Too many requests of this kind: try again later.",
    }
    return {
        code: OpenApiResponse(ApiErrorSerializer, description=described[code])
        for code in sorted({401, 403, *codes})
    }


class NoOutput(exceptions.NotFound):
    default_detail = "This run has no such output."
    default_code = "no_output"


@contextmanager
def service_errors() -> Iterator[None]:
    """Turn the services' input errors into a 400 ``invalid`` naming the field, with the
    message the job form shows: NotebookError ("notebook"), ParameterError
    ("parameters"), ScheduleError ("timezone" for an unknown zone, else "cron").
    ValidationError and LimitExceeded pass on to ``api.errors``."""
    try:
        yield
    except notebooks.NotebookError as exc:
        raise serializers.ValidationError({"notebook": [str(exc)]}) from None
    except notebooks.ParameterError as exc:
        raise serializers.ValidationError({"parameters": [str(exc)]}) from None
    except schedule.ScheduleError as exc:
        field = "timezone" if str(exc).startswith("Unknown time zone") else "cron"
        raise serializers.ValidationError({field: [str(exc)]}) from None


# --- Fields ----------------------------------------------------------------------------------


class NotebookFileField(serializers.FileField):
    """A notebook upload (.ipynb), checked exactly as the job form checks it
    (``jobs.forms.NotebookField``: size against NOTEBOOK_MAX_BYTES, then read and
    validated once). Its value is a ``NotebookUpload`` (file name and parsed notebook)."""

    def to_internal_value(self, data) -> NotebookUpload:
        upload = super().to_internal_value(data)
        try:
            return NotebookField().clean(upload)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None


@extend_schema_field({"type": "object", "additionalProperties": {}})
class ObjectField(serializers.JSONField):
    """A JSON object: in a JSON body an object, in a multipart body the object's JSON text."""

    default_error_messages = {"not_an_object": "Enter a JSON object of names and values."}

    def to_internal_value(self, data) -> dict:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_an_object")
        return value


# --- Jobs ------------------------------------------------------------------------------------


class JobSettingsSerializer(serializers.ModelSerializer):
    """The settings of a job (``Job.SETTINGS_FIELDS``) as a client sends them, validated as
    the job form validates them: the model fields' validators (cron, time zone, addresses,
    retries), the timeout and cluster size bounds, at most ALERT_MAX_RECIPIENTS alert
    addresses, and a running cluster of the job's owner for the Spark target "cluster".

    ``schedule_kind`` names how the schedule was chosen; ``cron`` is the schedule itself
    and is required unless the kind is "manual" (whose cron is emptied). A ``cron`` sent
    without a kind for a manual job makes the kind "cron". Parameters are checked against
    the notebook by the services.

    A continuous job (as sent, else as stored) takes no values for
    ``notebooks.STREAM_PARAMETERS`` (``checkpoint_dir``, ``output_dir``): the portal injects
    the job's own durable directories into its runs. Sending them is refused with a 400
    naming them rather than dropped, so that a client does not believe its value is used;
    values a job kept from before it was made continuous are dropped by the services
    (``services.update_job``).
    """

    class Meta:
        model = Job
        fields = list(Job.SETTINGS_FIELDS)
        extra_kwargs = {
            # Checked in validate(): a manual job's cron is emptied, not checked (as the form).
            "cron": {
                "validators": [],
                "help_text": "5-field cron expression (minute hour day month weekday), read "
                "in the job's time zone; required unless schedule_kind is manual.",
            },
            "parameters": {
                "help_text": "Parameter values by name, checked against the notebook's "
                "parameters cell; any names when it has none (injected at the top). A "
                "continuous job takes none for checkpoint_dir or output_dir: the portal sets "
                "them to the job's own directories."
            },
            "timeout_seconds": {
                "help_text": "A run still going after this many seconds ends TIMED_OUT "
                "(at most JOB_MAX_TIMEOUT_SECONDS)."
            },
        }

    def __init__(self, *args, owner=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cluster = self.fields["cluster"]
        assert isinstance(cluster, serializers.PrimaryKeyRelatedField)
        cluster.queryset = (
            Cluster.objects.filter(owner=owner).live() if owner else Cluster.objects.none()
        )

    def validate_parameters(self, value: Any) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Enter a JSON object of parameter names and values.")
        return value

    def validate_timezone(self, value: str) -> str:
        return value.strip()

    def validate_timeout_seconds(self, value: int) -> int:
        return _bounded(value, 1, settings.JOB_MAX_TIMEOUT_SECONDS)

    def validate_cluster_size(self, value: int) -> int:
        return _bounded(value, 1, settings.CLUSTER_MAX_SIZE)

    def validate_notify_on_failure(self, value: str) -> str:
        return ", ".join(split_addresses(value))

    def validate_notify_on_success(self, value: str) -> str:
        return ", ".join(split_addresses(value))

    def validate(self, attrs: dict) -> dict:
        before = self.instance if self.instance is not None else Job()  # a new job: defaults

        def current(name: str) -> Any:
            return attrs[name] if name in attrs else getattr(before, name)

        Kind = Job.ScheduleKind
        if (
            attrs.get("cron")
            and "schedule_kind" not in attrs
            and current("schedule_kind") == Kind.MANUAL
        ):
            attrs["schedule_kind"] = Kind.CRON
        if current("schedule_kind") != Kind.MANUAL and {"cron", "schedule_kind"} & attrs.keys():
            try:
                attrs["cron"] = schedule.validate_cron(current("cron") or "")
            except schedule.ScheduleError as exc:
                raise serializers.ValidationError({"cron": [str(exc)]}) from None
        try:
            validate_recipient_count(current("notify_on_failure"), current("notify_on_success"))
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        if current("spark_target") == Job.SparkTarget.CLUSTER:
            if not current("cluster"):
                raise serializers.ValidationError(
                    {"cluster": ["Choose one of your running clusters."]}
                )
        else:
            attrs["cluster"] = None
        if current("continuous"):
            given = [n for n in notebooks.STREAM_PARAMETERS if n in (attrs.get("parameters") or {})]
            if given:
                raise serializers.ValidationError(
                    {"parameters": [stream_parameters_message(given)]}
                )
        return attrs


def stream_parameters_message(names: list[str]) -> str:
    """The error of values sent for the stream parameters ``names`` of a continuous job."""
    return (
        f"{', '.join(names)}: set by the portal for a continuous job (the job's own durable "
        f"directories); leave {'it' if len(names) == 1 else 'them'} out."
    )


def _bounded(value: int, low: int, high: int) -> int:
    """``value`` if within [low, high], else a ValidationError in DRF's own words."""
    if value < low:
        raise serializers.ValidationError(f"Ensure this value is greater than or equal to {low}.")
    if value > high:
        raise serializers.ValidationError(f"Ensure this value is less than or equal to {high}.")
    return value


@extend_schema_field(JobSettingsSerializer)
class SettingsField(ObjectField):
    """The settings of a new job: a JSON object, checked by JobSettingsSerializer."""


class JobSerializer(serializers.ModelSerializer):
    """A job: its settings (``Job.SETTINGS_FIELDS``), owner, next slot (UTC), latest
    notebook version number, and the address of its page."""

    latest_version = serializers.SerializerMethodField(
        help_text="Number of the newest notebook version."
    )
    web_url = serializers.SerializerMethodField(help_text="The job's page in the portal.")

    class Meta:
        model = Job
        fields = [
            "id",
            "owner",
            *Job.SETTINGS_FIELDS,
            "next_run_at",
            "latest_version",
            "created_at",
            "updated_at",
            "web_url",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_latest_version(self, job: Job) -> int | None:
        if hasattr(job, "latest_version_number"):
            return job.latest_version_number
        return job.versions.aggregate(n=Max("number"))["n"]

    def get_web_url(self, job: Job) -> str:
        return self.context["request"].build_absolute_uri(job.get_absolute_url())


class JobCreateSerializer(serializers.Serializer):
    """Multipart body of a new job: the notebook file and the job's settings."""

    notebook = NotebookFileField(help_text="The notebook (.ipynb).")
    settings = SettingsField(help_text="The job's settings, a JSON object.")


class VersionSerializer(serializers.ModelSerializer):
    """One immutable notebook version of a job."""

    class Meta:
        model = NotebookVersion
        fields = [
            "number",
            "original_name",
            "size_bytes",
            "sha256",
            "cell_count",
            "code_cell_count",
            "parameter_schema",
            "has_parameters_cell",
            "uploaded_by",
            "created_at",
        ]
        read_only_fields = fields


class VersionUploadSerializer(serializers.Serializer):
    notebook = NotebookFileField(help_text="The new version of the notebook (.ipynb).")


class VersionUploadedSerializer(serializers.Serializer):
    version = VersionSerializer()
    dropped_parameters = serializers.ListField(
        child=serializers.CharField(),
        help_text="The job's parameter values the new notebook does not take; removed.",
    )


class RunNowSerializer(serializers.Serializer):
    parameters = ObjectField(
        required=False,
        default=dict,
        help_text="Values overriding the job's parameters for this run.",
    )


# --- Runs ------------------------------------------------------------------------------------


def progress_text(run: Run) -> str:
    """ "cell i of N": while RUNNING, the code cell executing now (the one after those
    done); otherwise the cells done. "" until the kernel has counted the cells."""
    if not run.cells_total:
        return ""
    done = run.cells_done
    current = min(done + 1, run.cells_total) if run.state == Run.State.RUNNING else done
    return f"cell {current} of {run.cells_total}"


class ProgressSerializer(serializers.Serializer):
    """How far a run got: code cells done of all, and the cell executing now."""

    cells_done = serializers.IntegerField()
    cells_total = serializers.IntegerField(help_text="0 until the kernel started.")
    current_cell_index = serializers.IntegerField(allow_null=True)
    current_cell_head = serializers.CharField(help_text="First line of the cell executing now.")
    text = serializers.SerializerMethodField(help_text='"cell i of N", or "" before the start.')

    def get_text(self, run: Run) -> str:
        return progress_text(run)


class RunErrorSerializer(serializers.Serializer):
    """Why a run failed: the failing cell and its exception."""

    cell_index = serializers.IntegerField(
        allow_null=True, help_text="Index of the failing cell in the output notebook."
    )
    ename = serializers.CharField(help_text="Exception name.")
    evalue = serializers.CharField(help_text="Exception value.")
    traceback = serializers.CharField(help_text="Traceback, without colour codes.")


class RunOutputsSerializer(serializers.Serializer):
    """Where to download a run's outputs; null while there is none or once expired."""

    ipynb = serializers.URLField(allow_null=True)
    html = serializers.URLField(allow_null=True)


class RecordedValueSerializer(serializers.ModelSerializer):
    """A value the run's notebook recorded with scrapbook's ``glue`` (recorded.models):
    ``number`` for a number, ``text`` for a string, ``data`` for a table
    (``{"columns", "rows"}``), a figure's Plotly JSON or other JSON; untrusted content."""

    class Meta:
        model = RecordedValue
        fields = ["name", "kind", "number", "text", "data", "note"]
        read_only_fields = fields


class RunEventSerializer(serializers.ModelSerializer):
    """A change of a run's state: created, claimed by a worker, retried, ended."""

    class Meta:
        model = RunEvent
        fields = ["at", "attempt", "state", "message", "worker"]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    """A run: state, timings (UTC; ``duration_seconds`` of the current attempt, still
    growing while it runs), progress, error summary and output addresses."""

    job_name = serializers.CharField(source="job.name", read_only=True)
    owner = serializers.IntegerField(source="job.owner_id", read_only=True)
    duration_seconds = serializers.SerializerMethodField(
        help_text="Seconds from the start of the current attempt to its end (or now)."
    )
    progress = ProgressSerializer(source="*", read_only=True)
    error = serializers.SerializerMethodField(help_text="Set when the run failed in a cell.")
    outputs = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField(help_text="The run's page in the portal.")

    class Meta:
        model = Run
        fields = [
            "id",
            "uuid",
            "job",
            "job_name",
            "owner",
            "trigger",
            "scheduled_for",
            "state",
            "state_reason",
            "attempt",
            "max_attempts",
            "parameters",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "cancel_requested_at",
            "progress",
            "error",
            "outputs",
            "output_expired_at",
            "web_url",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_duration_seconds(self, run: Run) -> float | None:
        duration = run.duration
        return round(duration.total_seconds(), 3) if duration is not None else None

    @extend_schema_field(RunErrorSerializer(allow_null=True))
    def get_error(self, run: Run) -> dict | None:
        if not (run.error_ename or run.error_traceback or run.error_cell_index is not None):
            return None
        return {
            "cell_index": run.error_cell_index,
            "ename": run.error_ename,
            "evalue": run.error_evalue,
            "traceback": run.error_traceback,
        }

    @extend_schema_field(RunOutputsSerializer)
    def get_outputs(self, run: Run) -> dict:
        request = self.context["request"]

        def url(key: str, name: str) -> str | None:
            if not key or run.output_expired_at is not None:
                return None
            return request.build_absolute_uri(reverse(name, args=[run.pk]))

        return {
            "ipynb": url(run.output_key, "api-runs-output-ipynb"),
            "html": url(run.html_key, "api-runs-output-html"),
        }

    def get_web_url(self, run: Run) -> str:
        return self.context["request"].build_absolute_uri(run.get_absolute_url())


class RunLogSerializer(serializers.Serializer):
    """One stored log of a run (``jobs.logs``): masked, its tail kept."""

    name = serializers.CharField(help_text="kernel.log, driver.log or executor-W-N.log.")
    bytes = serializers.IntegerField(help_text="Its size in bytes.")
    url = serializers.URLField(help_text="Its text (text/plain).")


class RunDetailSerializer(RunSerializer):
    """A run with its events: one per state change and attempt."""

    events = RunEventSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "events"]
        read_only_fields = fields


class RunFilterSerializer(serializers.Serializer):
    """Filters of the runs list (query parameters)."""

    # Bounded by the id columns (jobs: 64-bit, users: Django's 32-bit AutoField), so that
    # an id no column can hold is a 400, not a database error.
    job = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Runs of this job only."
    )
    state = serializers.ChoiceField(Run.State.choices, required=False)
    owner = serializers.IntegerField(
        required=False, min_value=1, max_value=2**31 - 1, help_text="Runs of this user's jobs only."
    )
    created_after = serializers.DateTimeField(
        required=False, help_text="Created at or after (ISO 8601; UTC unless a zone is given)."
    )
    created_before = serializers.DateTimeField(
        required=False, help_text="Created before (ISO 8601; UTC unless a zone is given)."
    )


class RunFileSerializer(serializers.Serializer):
    """Multipart body of "run a notebook file"."""

    notebook = NotebookFileField(help_text="The notebook (.ipynb).")
    parameters = ObjectField(
        required=False, default=dict, help_text="Parameter values for this run (a JSON object)."
    )
    job = serializers.PrimaryKeyRelatedField(
        queryset=Job.objects.none(),
        required=False,
        allow_null=True,
        help_text="Run as a new version of this job of yours; without it, the manual job "
        "named after the file is used (made on first use).",
    )

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["job"]
        assert isinstance(field, serializers.PrimaryKeyRelatedField)
        field.queryset = Job.objects.owned_by(user) if user else Job.objects.none()


class RunCursorPagination(CursorPagination):
    """Newest runs first, by id (stable under inserts: new runs never shift a page)."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


# --- Idempotency-Key -------------------------------------------------------------------------

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces (model: 200)

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="Any unique string (up to 200 printable characters), e.g. a UUID. A retry "
    "with the same key within IDEMPOTENCY_KEY_HOURS (24 h) returns the run the first "
    "request made (200) instead of making another.",
)


class _KeyTaken(Exception):
    """A concurrent request with the same Idempotency-Key committed its run first."""


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, or None without one. Raises ValidationError (400)
    for a key that is not 1 to 200 printable ASCII characters."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _KEY_PATTERN.fullmatch(key):
        raise serializers.ValidationError(
            {IDEMPOTENCY_HEADER: ["Use 1 to 200 printable ASCII characters, e.g. a UUID."]}
        )
    return key


def remembered_run(user, key: str, job_id: int | None = None) -> Run | None:
    """The run ``user`` made with ``key`` within IDEMPOTENCY_KEY_HOURS, or None (an older
    memory of the key is forgotten). Raises Conflict (409) when it is a run of another job
    than ``job_id`` (the key was used for a different request)."""
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_HOURS)
    IdempotencyKey.objects.filter(user=user, key=key, created_at__lte=cutoff).delete()
    known = IdempotencyKey.objects.filter(user=user, key=key).select_related("run").first()
    if known is None:
        return None
    if job_id is not None and known.run.job_id != job_id:
        raise Conflict(
            f"This {IDEMPOTENCY_HEADER} was used for a run of another job: use a new key."
        )
    return known.run


def idempotent_run(
    user, key: str | None, make: Callable[[], Run], job_id: int | None = None
) -> tuple[Run, bool]:
    """``(run, created)``: the run ``user`` made with ``key`` (``remembered_run``), else
    ``make()``'s new run, remembered under ``key``. Without a key, always ``make()``.

    Two requests with the same key at once make one run: the run and the key's row are
    written in one transaction, and the key's unique constraint (user, key) refuses the
    second row; that transaction, with its run and the run's queue message (sent only on
    commit), is rolled back, and the run of the first is returned. Raises what ``make``
    raises, and Conflict as ``remembered_run`` does.
    """
    if key is None:
        return make(), True
    for _ in range(2):
        try:
            with transaction.atomic():
                known = remembered_run(user, key, job_id)
                if known is not None:
                    return known, False
                run = make()
                try:
                    with transaction.atomic():
                        IdempotencyKey.objects.create(user=user, key=key, run=run)
                except IntegrityError:
                    raise _KeyTaken from None  # leaves the outer block: its run is undone
                return run, True
        except _KeyTaken:
            continue  # the other request's key is committed: the next pass finds its run
    raise Conflict(f"Another request with this {IDEMPOTENCY_HEADER} is still in progress.")


# --- Views -------------------------------------------------------------------------------------


class JobViewSet(viewsets.GenericViewSet):
    """Jobs: the caller's and shared ones to read; the caller's own (staff: all) to change."""

    lookup_value_converter = "int"
    serializer_class = JobSerializer
    queryset = Job.objects.none()  # for the schema; get_queryset scopes it to the caller
    scopes = {
        "create": "jobs",
        "partial_update": "jobs",
        "destroy": "jobs",
        "pause": "jobs",
        "resume": "jobs",
        "upload_version": "jobs",
        "run": "run",
    }
    #: Actions that change the job: only its owner and staff may (404 for others).
    CHANGES = {"partial_update", "destroy", "pause", "resume", "upload_version", "run"}

    def get_queryset(self) -> QuerySet[Job]:
        user = self.request.user
        jobs = (
            Job.objects.owned_by(user)
            if self.action in self.CHANGES
            else Job.objects.visible_to(user)
        )
        return (
            jobs.annotate(latest_version_number=Max("versions__number"))
            .select_related("owner")
            .order_by("id")
        )

    def _job(self, job: Job) -> dict:
        return JobSerializer(job, context=self.get_serializer_context()).data

    @extend_schema(
        summary="List jobs",
        parameters=[
            OpenApiParameter(
                "mine",
                OpenApiTypes.BOOL,
                description="Only the caller's own jobs (shared jobs of others left out).",
            )
        ],
        responses={200: JobSerializer(many=True), **error_responses(400)},
    )
    def list(self, request: Request) -> Response:
        """Jobs the caller may see: their own, shared ones, all of them for staff."""
        mine = serializers.BooleanField(required=False).run_validation(
            request.query_params.get("mine", False)
        )
        jobs = self.get_queryset()
        if mine:
            jobs = jobs.filter(owner=request.user)
        return Response(JobSerializer(jobs, many=True, context=self.get_serializer_context()).data)

    @extend_schema(summary="Get a job", responses={200: JobSerializer, **error_responses(404)})
    def retrieve(self, request: Request, pk: int) -> Response:
        return Response(self._job(self.get_object()))

    @extend_schema(
        summary="Create a job",
        request={"multipart/form-data": JobCreateSerializer},
        responses={201: JobSerializer, **error_responses(400, 429)},
    )
    def create(self, request: Request) -> Response:
        """A new job from a notebook and its settings (JobSettings), checked as the job
        form checks them; the notebook becomes version 1."""
        body = JobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job_settings = JobSettingsSerializer(
            data=body.validated_data["settings"], owner=request.user
        )
        job_settings.is_valid(raise_exception=True)
        upload: NotebookUpload = body.validated_data["notebook"]
        with service_errors():
            job = services.create_job(
                request.user, Job(**job_settings.validated_data), upload.parsed, upload.name
            )
        return Response(
            self._job(job),
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("api-jobs-detail", args=[job.pk])},
        )

    @extend_schema(
        summary="Change a job's settings",
        request={"application/json": JobSettingsSerializer},
        responses={200: JobSerializer, **error_responses(400, 404)},
    )
    def partial_update(self, request: Request, pk: int) -> Response:
        """Change some settings; a changed schedule, zone or enabled flag moves the next run."""
        job = self.get_object()
        changes = JobSettingsSerializer(job, data=request.data, partial=True, owner=job.owner)
        changes.is_valid(raise_exception=True)
        for name, value in changes.validated_data.items():
            setattr(job, name, value)
        with service_errors():
            job = services.update_job(job)
        return Response(self._job(job))

    @extend_schema(summary="Delete a job", responses={204: None, **error_responses(404)})
    def destroy(self, request: Request, pk: int) -> Response:
        """Delete the job, its versions, runs and their files."""
        services.delete_job(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Pause a job", request=None, responses={200: JobSerializer, **error_responses(404)}
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: int) -> Response:
        """Stop the schedule; runs already made go on."""
        return Response(self._job(services.set_job_enabled(self.get_object(), False)))

    @extend_schema(
        summary="Resume a job", request=None, responses={200: JobSerializer, **error_responses(404)}
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: int) -> Response:
        """Start the schedule again from the next slot (missed slots are not caught up)."""
        return Response(self._job(services.set_job_enabled(self.get_object(), True)))

    @extend_schema(
        summary="Run now",
        request={"application/json": RunNowSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: OpenApiResponse(RunDetailSerializer, description="The new run."),
            200: OpenApiResponse(
                RunDetailSerializer, description="The run an earlier request with this key made."
            ),
            **error_responses(400, 404, 409, 429),
        },
    )
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: int) -> Response:
        """Start a run of the latest version now, with the job's parameters overridden by
        ``parameters``; the schedule does not move."""
        job = self.get_object()
        key = idempotency_key(request)
        body = RunNowSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data["parameters"]
        with service_errors():
            run, created = idempotent_run(
                request.user,
                key,
                lambda: services.run_now(job, request.user, values),
                job_id=job.pk,
            )
        return _run_response(run, created, self.get_serializer_context())

    @extend_schema(
        summary="List notebook versions",
        responses={200: VersionSerializer(many=True), **error_responses(404)},
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def versions(self, request: Request, pk: int) -> Response:
        """The job's notebook versions, newest first."""
        job = self.get_object()
        return Response(VersionSerializer(job.versions.order_by("-number"), many=True).data)

    @extend_schema(
        summary="Upload a notebook version",
        request={"multipart/form-data": VersionUploadSerializer},
        responses={201: VersionUploadedSerializer, **error_responses(400, 404, 429)},
    )
    @versions.mapping.post
    def upload_version(self, request: Request, pk: int) -> Response:
        """A new version from a notebook file; the job's parameter values it does not take
        are dropped (and named). Runs already made keep their version."""
        job = self.get_object()
        body = VersionUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload: NotebookUpload = body.validated_data["notebook"]
        with service_errors():
            version, dropped = services.upload_version(
                job, request.user, upload.parsed, upload.name
            )
        return Response(
            {"version": VersionSerializer(version).data, "dropped_parameters": dropped},
            status=status.HTTP_201_CREATED,
        )


def _run_response(run: Run, created: bool, context: dict) -> Response:
    """A run's detail: 201 with its Location when ``created``, else 200 (a retry)."""
    run = Run.objects.select_related("job").prefetch_related("events").get(pk=run.pk)
    body = RunDetailSerializer(run, context=context).data
    if not created:
        return Response(body)
    return Response(
        body,
        status=status.HTTP_201_CREATED,
        headers={"Location": reverse("api-runs-detail", args=[run.pk])},
    )


class RunViewSet(viewsets.GenericViewSet):
    """Runs of the jobs the caller may see; cancel and re-run for the job's owner and staff."""

    lookup_value_converter = "int"
    serializer_class = RunSerializer
    queryset = Run.objects.none()  # for the schema; get_queryset scopes it to the caller
    pagination_class = RunCursorPagination
    scopes = {"create": "run", "cancel": "run", "rerun": "run"}
    CHANGES = {"cancel", "rerun"}
    DOWNLOADS = {"output_ipynb", "output_html", "log_text"}
    #: Reads for the job's owner and staff only, even of a shared job (``jobs.logs``).
    OWNER_READS = {"logs", "log_text"}

    def get_queryset(self) -> QuerySet[Run]:
        user = self.request.user
        runs = (
            Run.objects.owned_by(user)
            if self.action in self.CHANGES | self.OWNER_READS
            else Run.objects.visible_to(user)
        )
        return runs.select_related("job").order_by("-id")

    def perform_content_negotiation(self, request, force=False):
        # A download answers with its own type whatever the Accept header; its errors are
        # JSON, never a 406.
        return super().perform_content_negotiation(request, force or self.action in self.DOWNLOADS)

    def _detail(self, run: Run, created: bool = False) -> Response:
        return _run_response(run, created, self.get_serializer_context())

    @extend_schema(
        summary="List runs",
        parameters=[RunFilterSerializer],
        responses={200: RunSerializer(many=True), **error_responses(400, 404)},
    )
    def list(self, request: Request) -> Response:
        """Runs of the jobs the caller may see, newest first, a page at a time (follow
        ``next``). An unusable ``cursor`` is a 404."""
        filters = RunFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        runs = self.get_queryset()
        lookups = {
            "job": "job_id",
            "state": "state",
            "owner": "job__owner_id",
            "created_after": "created_at__gte",
            "created_before": "created_at__lt",
        }
        runs = runs.filter(**{lookups[name]: value for name, value in wanted.items()})
        page = self.paginate_queryset(runs)
        data = RunSerializer(page, many=True, context=self.get_serializer_context()).data
        return self.get_paginated_response(data)

    @extend_schema(
        summary="Get a run", responses={200: RunDetailSerializer, **error_responses(404)}
    )
    def retrieve(self, request: Request, pk: int) -> Response:
        """State, progress ("cell i of N"), timings, events, error summary and outputs."""
        return self._detail(self.get_object())

    @extend_schema(
        summary="Run a notebook file",
        request={"multipart/form-data": RunFileSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: OpenApiResponse(RunDetailSerializer, description="The new run."),
            200: OpenApiResponse(
                RunDetailSerializer, description="The run an earlier request with this key made."
            ),
            **error_responses(400, 409, 429),
        },
    )
    def create(self, request: Request) -> Response:
        """Run a notebook file now. Without ``job``: as the caller's manual job named after
        the file ("CLI: <file name>"), made on first use, with a new version when the file
        changed. With ``job`` (one of the caller's): as a new version of it if the file
        differs from its latest. Parameters are checked against the notebook."""
        key = idempotency_key(request)
        body = RunFileSerializer(data=request.data, user=request.user)
        body.is_valid(raise_exception=True)
        job: Job | None = body.validated_data.get("job")
        if key is not None:
            known = remembered_run(request.user, key, job.pk if job else None)
            if known is not None:
                return self._detail(known)
        upload: NotebookUpload = body.validated_data["notebook"]
        values = body.validated_data["parameters"]
        with service_errors():
            if job is None:
                job = services.job_for_notebook(request.user, upload.parsed, upload.name)
            else:
                services.sync_version(job, request.user, upload.parsed, upload.name)
                job.refresh_from_db()
            target = job
            run, created = idempotent_run(
                request.user,
                key,
                lambda: services.run_now(target, request.user, values, trigger=Run.Trigger.CLI),
                job_id=job.pk,
            )
        return self._detail(run, created)

    @extend_schema(
        summary="Cancel a run",
        request=None,
        responses={200: RunDetailSerializer, **error_responses(404, 409)},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: int) -> Response:
        """A QUEUED run ends CANCELLED at once; a RUNNING one when its kernel has stopped
        (``cancel_requested_at`` is set meanwhile). 409 for a run that had ended."""
        run = self.get_object()
        if run.is_final:
            raise Conflict(f"The run had already ended ({run.get_state_display()}).")
        return self._detail(services.cancel_run(run, request.user))

    @extend_schema(
        summary="Re-run a run",
        request=None,
        responses={201: RunDetailSerializer, **error_responses(404, 429)},
    )
    @action(detail=True, methods=["post"])
    def rerun(self, request: Request, pk: int) -> Response:
        """A new run with the same notebook version and parameters."""
        return self._detail(services.rerun(self.get_object(), request.user), created=True)

    @extend_schema(
        summary="List a run's events",
        responses={200: RunEventSerializer(many=True), **error_responses(404)},
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def events(self, request: Request, pk: int) -> Response:
        """Every state change of the run, oldest first, with its attempt and worker."""
        run = self.get_object()
        return Response(RunEventSerializer(run.events.all(), many=True).data)

    @extend_schema(
        summary="List a run's recorded values",
        responses={200: RecordedValueSerializer(many=True), **error_responses(404)},
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def values(self, request: Request, pk: int) -> Response:
        """The values the run's notebook recorded with scrapbook's ``glue``, in the order it
        recorded them (at most RECORDED_MAX_VALUES), stored as the run ended."""
        run = self.get_object()
        return Response(RecordedValueSerializer(run.recorded_values.all(), many=True).data)

    @extend_schema(
        summary="List a run's logs",
        responses={200: RunLogSerializer(many=True), **error_responses(404)},
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def logs(self, request: Request, pk: int) -> Response:
        """The run's stored logs: the kernel's stderr, the Spark driver's log and, on a
        cluster, its executors' logs; live while the run runs (refreshed every few
        seconds), stored with the run afterwards, until its output expires. Secrets the
        portal knows are masked. For the job's owner and staff only: 404 for others, even
        for a shared job."""
        run = self.get_object()
        return Response(
            [
                {
                    "name": entry.name,
                    "bytes": entry.bytes,
                    "url": request.build_absolute_uri(
                        reverse("api-runs-log", args=[run.pk, entry.name])
                    ),
                }
                for entry in job_logs.stored_logs(run)
            ]
        )

    @extend_schema(
        summary="Get a run's log",
        operation_id="runs_log_text",
        responses={(200, "text/plain"): OpenApiTypes.STR, **error_responses(404)},
    )
    def log_text(self, request: Request, pk: int, name: str) -> HttpResponseBase:
        """One log as text/plain (an attachment, ``nosniff``): untrusted text, masked.
        404 ``no_output`` for a name the run has no log of."""
        run = self.get_object()
        try:
            key = job_logs.storage_key(run, name)
        except ValueError:
            raise NoOutput("The run has no such log.") from None
        if not default_storage.exists(key):
            raise NoOutput("The run has no such log.")
        return attachment(key, f"{run.job.name}-run-{run.pk}-{name}", "text/plain; charset=utf-8")

    @extend_schema(
        summary="Download the output notebook",
        operation_id="runs_output_ipynb",
        responses={
            (200, "application/x-ipynb+json"): OpenApiTypes.BINARY,
            **error_responses(404),
        },
    )
    def output_ipynb(self, request: Request, pk: int) -> HttpResponseBase:
        """The executed notebook, streamed. 404 ``no_output`` when the run has none (not
        finished, skipped, cancelled early) or it expired."""
        run = self.get_object()
        key = self._output_key(run, run.output_key)
        return attachment(
            key,
            f"{run.job.name}-run-{run.pk}.ipynb",
            "application/x-ipynb+json",
            request=request,
            gzip_key=run.output_gzip_key,
        )

    @extend_schema(
        summary="Download the output as HTML",
        operation_id="runs_output_html",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            **error_responses(404),
        },
    )
    def output_html(self, request: Request, pk: int) -> HttpResponseBase:
        """The rendered output as one HTML file that draws its charts offline (plotly.js
        inlined, as the run page's download). Sent as a download, never as a page of the
        portal's origin. 404 ``no_output`` as for the notebook."""
        run = self.get_object()
        key = self._output_key(run, run.html_key)
        return attachment(
            key,
            f"{run.job.name}-run-{run.pk}.html",
            "application/octet-stream",
            standalone_chunks,
            request=request,
        )

    @staticmethod
    def _output_key(run: Run, key: str) -> str:
        """``key`` if the stored file is there, else NoOutput saying why."""
        if run.output_expired_at is not None:
            day = run.output_expired_at.date().isoformat()
            raise NoOutput(f"The run's output expired on {day} (the job's retention).")
        if not key or not default_storage.exists(key):
            if run.is_active:
                raise NoOutput("The run has not finished: its output is not there yet.")
            raise NoOutput("The run has no such output.")
        return key


ROUTES = [("jobs", JobViewSet, "api-jobs"), ("runs", RunViewSet, "api-runs")]

#: The downloads, at the paths docs/api.md gives (a file name, no trailing slash, which the
#: router would add).
URLS = [
    path(
        "runs/<int:pk>/output.ipynb",
        RunViewSet.as_view({"get": "output_ipynb"}, detail=True),
        name="api-runs-output-ipynb",
    ),
    path(
        "runs/<int:pk>/output.html",
        RunViewSet.as_view({"get": "output_html"}, detail=True),
        name="api-runs-output-html",
    ),
    path(
        "runs/<int:pk>/logs/<str:name>",
        RunViewSet.as_view({"get": "log_text"}, detail=True),
        name="api-runs-log",
    ),
]
