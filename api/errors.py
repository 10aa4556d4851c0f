"""One JSON shape for every API error: ``{"code": "...", "detail": "..."}``, plus
``"errors": {field: [messages]}`` for invalid input.

Codes are stable (clients may switch on them): not_authenticated, invalid_token,
missing_scope, permission_denied, not_found, invalid, limit_exceeded, rate_limited,
method_not_allowed, unsupported_media_type, parse_error, conflict.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from quotas.limits import LimitExceeded


class ApiErrorSerializer(serializers.Serializer):
    """The error body, for the OpenAPI schema (component "ApiError")."""

    code = serializers.CharField(help_text="Stable error code, e.g. invalid, not_found.")
    detail = serializers.CharField(help_text="What went wrong, for people.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Invalid input only: messages by field; non_field_errors for the whole.",
    )


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def handle(exc, context):
    """DRF's EXCEPTION_HANDLER: the portal's own errors first, then DRF's, reshaped."""
    if isinstance(exc, LimitExceeded):
        rate = exc.code == "rate_limited"
        code = status.HTTP_429_TOO_MANY_REQUESTS if rate else status.HTTP_403_FORBIDDEN
        body: dict[str, object] = {"code": exc.code, "detail": exc.message}
        if exc.field:
            body["errors"] = {exc.field: [exc.message]}
        return Response(body, status=code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = exception_handler(exc, context)
    if response is None:
        return None
    response.data = _shape(exc, response.data)
    return response


def _shape(exc, data) -> dict:
    if isinstance(exc, exceptions.ValidationError):
        errors = data if isinstance(data, dict) else {"non_field_errors": data}
        first = next(iter(errors.values()), ["Invalid input."])
        message = first[0] if isinstance(first, list) and first else str(first)
        return {"code": "invalid", "detail": str(message), "errors": errors}
    code = exc.get_codes() if hasattr(exc, "get_codes") else "error"
    if isinstance(exc, exceptions.AuthenticationFailed):
        code = "invalid_token"
    if not isinstance(code, str):
        code = "error"
    detail = data.get("detail", "") if isinstance(data, dict) else str(data)
    return {"code": code, "detail": str(detail)}
