"""Backfills and sweeps in the API (``jobs.services.groups``).

- ``POST /api/jobs/{id}/backfill/`` and ``POST /api/jobs/{id}/sweep/`` start one (the
  job's owner or staff; scope ``run``), answering 201 with the group;
- ``GET /api/groups/`` and ``GET /api/groups/{id}/``: groups of jobs the caller may see,
  with their progress and the newest run of each slot or combination;
- ``POST /api/groups/{id}/cancel/`` and ``.../retry/``: Cancel all and Retry failed
  (owner or staff; scope ``run``).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.jobs import error_responses, service_errors
from jobs.models import Job, Run, RunGroup
from jobs.services import groups


class GroupRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Run.State.choices)
    trigger = serializers.ChoiceField(choices=Run.Trigger.choices)
    logical_date = serializers.DateTimeField(help_text="The slot it runs for (UTC).")
    parameters = serializers.DictField(help_text="The values it runs with.")


class GroupProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Slots or combinations.")
    done = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    running = serializers.IntegerField()
    queued = serializers.IntegerField()
    cancelled = serializers.IntegerField(help_text="Cancelled or skipped.")


class GroupSerializer(serializers.ModelSerializer):
    job = serializers.IntegerField(source="job_id")
    progress = serializers.SerializerMethodField()
    runs = serializers.SerializerMethodField()
    web_url = serializers.SerializerMethodField()

    class Meta:
        model = RunGroup
        fields = [
            "id",
            "job",
            "kind",
            "created_at",
            "max_concurrent",
            "parameters",
            "combine",
            "range_start",
            "range_end",
            "rerun_existing",
            "skipped_slots",
            "progress",
            "runs",
            "web_url",
        ]

    @extend_schema_field(GroupProgressSerializer)
    def get_progress(self, group: RunGroup) -> dict:
        progress = groups.progress(group, self._latest(group))
        return {**progress.__dict__, "done": progress.done}

    @extend_schema_field(GroupRunSerializer(many=True))
    def get_runs(self, group: RunGroup) -> list[dict]:
        return [
            {
                "id": run.pk,
                "state": run.state,
                "trigger": run.trigger,
                "logical_date": run.logical_date,
                "parameters": run.parameters,
            }
            for run in self._latest(group)
        ]

    def get_web_url(self, group: RunGroup) -> str:
        return group.get_absolute_url()

    def _latest(self, group: RunGroup) -> list[Run]:
        cache = self.context.setdefault("latest", {})
        if group.pk not in cache:
            cache[group.pk] = groups.latest_runs(group)
        return cache[group.pk]


class BackfillSerializer(serializers.Serializer):
    start = serializers.CharField(
        help_text="First instant of the range, ISO 8601; without an offset, a wall time in "
        "the job's time zone (e.g. 2026-10-24T00:00).",
    )
    end = serializers.CharField(help_text="Last instant of the range (included), likewise.")
    parameters = serializers.DictField(
        required=False, default=dict, help_text="Values overriding the job's for every run."
    )
    max_concurrent = serializers.IntegerField(default=2, help_text="Runs at a time.")
    rerun_existing = serializers.BooleanField(
        default=False, help_text="Give slots that already have a run a backfill re-run."
    )

    def _instant(self, value: str) -> datetime:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise serializers.ValidationError(
                "Not an ISO 8601 date and time, e.g. 2026-10-24T00:00."
            ) from None

    def validate_start(self, value: str) -> datetime:
        return self._instant(value)

    def validate_end(self, value: str) -> datetime:
        return self._instant(value)


class SweepSerializer(serializers.Serializer):
    parameters = serializers.DictField(
        child=serializers.ListField(child=serializers.JSONField(), allow_empty=False),
        help_text="Each swept parameter's list of values.",
    )
    combine = serializers.ChoiceField(choices=RunGroup.Combine.choices, default="grid")
    max_concurrent = serializers.IntegerField(default=2, help_text="Runs at a time.")


@contextmanager
def group_errors() -> Iterator[None]:
    """A GroupError (or a parameter error: ``service_errors``) as a 400 ``invalid``."""
    with service_errors():
        try:
            yield
        except groups.GroupError as exc:
            raise serializers.ValidationError({"non_field_errors": [str(exc)]}) from None


def _created(request: Request, group: RunGroup) -> Response:
    return Response(
        GroupSerializer(group, context={"request": request}).data,
        status=status.HTTP_201_CREATED,
        headers={"Location": reverse("api-groups-detail", args=[group.pk])},
    )


class JobGroupViewSet(viewsets.ViewSet):
    """``POST /api/jobs/{id}/backfill/`` and ``POST /api/jobs/{id}/sweep/``: the job's
    owner (or staff) starts a group; others get 404."""

    scopes = {"backfill": "run", "sweep": "run"}

    @extend_schema(
        summary="Backfill a job",
        operation_id="jobs_backfill",
        request=BackfillSerializer,
        responses={201: GroupSerializer, **error_responses(400, 404, 429)},
    )
    def backfill(self, request: Request, pk: int) -> Response:
        """One run per schedule slot of the job from ``start`` to ``end``, at most
        ``max_concurrent`` at a time."""
        job = get_object_or_404(Job.objects.owned_by(request.user), pk=pk)
        body = BackfillSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data: dict[str, Any] = body.validated_data
        with group_errors():
            group = groups.create_backfill(
                job,
                request.user,
                data["start"],
                data["end"],
                parameters=data["parameters"],
                max_concurrent=data["max_concurrent"],
                rerun_existing=data["rerun_existing"],
            )
        return _created(request, group)

    @extend_schema(
        summary="Sweep a job's parameters",
        operation_id="jobs_sweep",
        request=SweepSerializer,
        responses={201: GroupSerializer, **error_responses(400, 404, 429)},
    )
    def sweep(self, request: Request, pk: int) -> Response:
        """One run per combination of the values in ``parameters`` (grid or zip), at most
        ``max_concurrent`` at a time."""
        job = get_object_or_404(Job.objects.owned_by(request.user), pk=pk)
        body = SweepSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data: dict[str, Any] = body.validated_data
        with group_errors():
            group = groups.create_sweep(
                job,
                request.user,
                dict(data["parameters"]),
                combine=data["combine"],
                max_concurrent=data["max_concurrent"],
            )
        return _created(request, group)


class GroupViewSet(viewsets.GenericViewSet):
    """Backfills and sweeps: of jobs the caller may see to read; of their own (staff: all)
    to cancel or retry."""

    lookup_value_converter = "int"
    serializer_class = GroupSerializer
    queryset = RunGroup.objects.none()  # for the schema; get_queryset scopes it
    scopes = {"cancel": "run", "retry": "run"}
    CHANGES = {"cancel", "retry"}

    def get_queryset(self) -> QuerySet[RunGroup]:
        user = self.request.user
        jobs = (
            Job.objects.owned_by(user)
            if self.action in self.CHANGES
            else Job.objects.visible_to(user)
        )
        return RunGroup.objects.filter(job__in=jobs).select_related("job").order_by("-id")

    @extend_schema(summary="List backfills and sweeps", responses={200: GroupSerializer(many=True)})
    def list(self, request: Request) -> Response:
        """The newest 100 groups of jobs the caller may see."""
        listed = self.get_queryset()[:100]
        return Response(GroupSerializer(listed, many=True, context={"request": request}).data)

    @extend_schema(
        summary="Get a backfill or sweep", responses={200: GroupSerializer, **error_responses(404)}
    )
    def retrieve(self, request: Request, pk: int) -> Response:
        return Response(GroupSerializer(self.get_object(), context={"request": request}).data)

    @extend_schema(
        summary="Cancel all of a group's runs",
        request=None,
        responses={200: GroupSerializer, **error_responses(404)},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: int) -> Response:
        """Cancel every queued or running run of the group."""
        group = self.get_object()
        groups.cancel_group(group, request.user)
        return Response(GroupSerializer(group, context={"request": request}).data)

    @extend_schema(
        summary="Retry a group's failed runs",
        request=None,
        responses={200: GroupSerializer, **error_responses(404, 429)},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: int) -> Response:
        """A new run for each slot or combination whose newest run failed."""
        group = self.get_object()
        groups.retry_failed(group, request.user)
        return Response(GroupSerializer(group, context={"request": request}).data)


ROUTES = [("groups", GroupViewSet, "api-groups")]
URLS = [
    path(
        "jobs/<int:pk>/backfill/",
        JobGroupViewSet.as_view({"post": "backfill"}),
        name="api-jobs-backfill",
    ),
    path("jobs/<int:pk>/sweep/", JobGroupViewSet.as_view({"post": "sweep"}), name="api-jobs-sweep"),
]
