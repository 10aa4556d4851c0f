"""Jobs and runs in the API: the same rules as the pages (``Job.objects.visible_to`` and
``owned_by``, the services for every change)."""

from rest_framework import serializers, viewsets

from jobs.models import Job, Run


class JobSerializer(serializers.ModelSerializer):
    """A job: its settings (``Job.SETTINGS_FIELDS``), owner and next slot (UTC)."""

    class Meta:
        model = Job
        fields = ["id", "owner", *Job.SETTINGS_FIELDS, "next_run_at", "created_at", "updated_at"]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    """A run: state, timings (UTC), progress and error summary."""

    class Meta:
        model = Run
        fields = [
            "id",
            "job",
            "trigger",
            "scheduled_for",
            "state",
            "state_reason",
            "attempt",
            "max_attempts",
            "parameters",
            "created_at",
            "started_at",
            "finished_at",
            "cells_done",
            "cells_total",
            "error_cell_index",
            "error_ename",
            "error_evalue",
        ]
        read_only_fields = fields


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    """Jobs the caller may see."""

    lookup_value_converter = "int"
    serializer_class = JobSerializer

    def get_queryset(self):
        return Job.objects.visible_to(self.request.user).order_by("id")


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs of the jobs the caller may see."""

    lookup_value_converter = "int"
    serializer_class = RunSerializer

    def get_queryset(self):
        return Run.objects.visible_to(self.request.user).order_by("-id")


ROUTES = [("jobs", JobViewSet, "api-jobs"), ("runs", RunViewSet, "api-runs")]
