"""Token authentication of the API: ``Authorization: Bearer pap_...``.

A bad, revoked or expired token is a 401; a request without a token falls through to
the session (the browser, e.g. Swagger UI), which has every scope its user has.
"""

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from api.models import TOKEN_PREFIX, ApiToken, digest

#: ``last_used_at`` is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenAuthentication(authentication.BaseAuthentication):
    """DRF authentication by personal API token. ``request.auth`` is the ApiToken."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0] != self.keyword:
            return None
        if len(parts) != 2 or not parts[1].startswith(TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        token = ApiToken.objects.select_related("user").filter(digest=digest(parts[1])).first()
        if token is None or not token.is_usable or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        self._touch(token, request)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'

    @staticmethod
    def _touch(token: ApiToken, request) -> None:
        now = timezone.now()
        address = request.META.get("REMOTE_ADDR")
        if (
            token.last_used_at is None
            or now - token.last_used_at >= LAST_USED_RESOLUTION
            or token.last_used_ip != address
        ):
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=address)
