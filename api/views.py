"""The API's own small endpoints: who am I (a token's check)."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.decorators import api_view, permission_classes, schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from api.models import SCOPES


@extend_schema(
    responses=inline_serializer(
        "Me",
        {
            "id": serializers.IntegerField(),
            "email": serializers.EmailField(),
            "is_staff": serializers.BooleanField(),
            "scopes": serializers.ListField(child=serializers.CharField()),
        },
    )
)
@api_view(["GET"])
def me(request: Request) -> Response:
    """The signed-in user, and the scopes of the token used (every scope for a session)."""
    token = request.auth
    scopes = list(token.scopes) if hasattr(token, "scopes") else list(SCOPES)
    user = request.user
    return Response(
        {"id": user.pk, "email": user.email, "is_staff": user.is_staff, "scopes": scopes}
    )


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@permission_classes([AllowAny])
@schema(None)
def not_found(request: Request, rest: str = "") -> Response:
    """Every path under /api/ that names no route: a JSON 404 like any other API error."""
    raise exceptions.NotFound()
