"""The verbs of personal API tokens beyond ``ApiToken.issue``: revoking, and the state a
token is in, as the tokens page and the admin show it."""

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from api.models import ApiToken


def revoke(tokens: QuerySet[ApiToken], now: datetime | None = None) -> int:
    """Revoke every token of ``tokens`` not revoked yet, at ``now`` (UTC); returns how many
    were. A revoked token is refused (401) from the next request on. Revoking again keeps
    the first revocation time."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=now or timezone.now())


def state(token: ApiToken, now: datetime | None = None) -> str:
    """ "Revoked", "Expired" or "Active" at ``now`` (UTC), in that order of precedence."""
    now = now or timezone.now()
    if token.revoked_at is not None:
        return "Revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "Expired"
    return "Active"
