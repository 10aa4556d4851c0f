"""``GET /api/runs/{a}/compare/{b}/``: two runs compared as on their page (``jobs.compare``).

Both runs go through ``Run.objects.visible_to`` (a run the caller may not see is a 404,
never a 403); the token needs the ``read`` scope. The answer is plain data: parameters,
recorded values, whether the notebook versions differ, and a summary of each aligned
cell. Cell contents (untrusted notebook output) are not in it: the page's sandboxed frame
shows them.
"""

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from api.jobs import error_responses
from jobs import compare
from jobs.models import Run


class ComparedRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Run.State.choices)
    version = serializers.IntegerField(help_text="The notebook version's number.")
    created_at = serializers.DateTimeField(allow_null=True)


class ComparedJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ParameterChangeSerializer(serializers.Serializer):
    name = serializers.CharField()
    a = serializers.JSONField(allow_null=True, help_text="A's value (null when absent).")
    b = serializers.JSONField(allow_null=True, help_text="B's value (null when absent).")
    in_a = serializers.BooleanField()
    in_b = serializers.BooleanField()
    changed = serializers.BooleanField()


class ValueChangeSerializer(serializers.Serializer):
    name = serializers.CharField()
    a = serializers.CharField(
        allow_null=True, help_text="A's value as short text (null when A did not record it)."
    )
    b = serializers.CharField(allow_null=True, help_text="B's value, likewise.")
    changed = serializers.BooleanField()


class CellChangeSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The row of the alignment, from 0.")
    status = serializers.ChoiceField(
        choices=[compare.ADDED, compare.REMOVED, compare.CHANGED, compare.UNCHANGED],
        help_text="added: only in B; removed: only in A; changed: source or outputs differ.",
    )
    a_index = serializers.IntegerField(allow_null=True, help_text="The cell's index in A.")
    b_index = serializers.IntegerField(allow_null=True, help_text="The cell's index in B.")
    cell_type = serializers.CharField()
    source_changed = serializers.BooleanField()
    outputs_changed = serializers.BooleanField()


class ComparisonSerializer(serializers.Serializer):
    a = ComparedRunSerializer()
    b = ComparedRunSerializer()
    job = ComparedJobSerializer(allow_null=True, help_text="The job, when both runs share it.")
    version_changed = serializers.BooleanField()
    parameters = ParameterChangeSerializer(many=True)
    values = ValueChangeSerializer(many=True, help_text="The values the runs recorded.")
    cells = CellChangeSerializer(
        many=True,
        allow_null=True,
        help_text="Null when either output notebook is missing, expired or too large.",
    )
    cells_unavailable = serializers.CharField(help_text="Why cells is null; else empty.")
    web_path = serializers.CharField(help_text="The comparison's page on the portal.")


@extend_schema(
    summary="Compare two runs",
    operation_id="runs_compare",
    responses={200: ComparisonSerializer, **error_responses(404)},
)
@api_view(["GET"])
def run_compare(request: Request, pk: int, other: int) -> Response:
    """Run ``id`` (A) compared with run ``other`` (B): parameters (changes flagged), the
    notebook versions, and each cell of the outputs aligned by nbdime's diff."""
    runs = Run.objects.visible_to(request.user).select_related("job", "version")
    a = get_object_or_404(runs, pk=pk)
    b = get_object_or_404(runs, pk=other)
    return Response(compare.summary(compare.compare_runs(a, b)))


URLS = [path("runs/<int:pk>/compare/<int:other>/", run_compare, name="api-runs-compare")]
