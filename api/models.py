"""Personal API tokens, and the Idempotency-Key memory of "Run now"."""

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

#: What each scope allows; "read" is every GET.
SCOPES = {
    "read": "Read jobs, runs, outputs, clusters and keys",
    "run": "Run now, cancel and re-run runs",
    "jobs": "Create, change, pause, resume and delete jobs; upload notebooks",
    "clusters": "Launch, extend and terminate clusters; add and delete SSH keys",
}
#: Every token starts with this, so that secret scanners and people recognise one.
TOKEN_PREFIX = "pap_"


def digest(token: str) -> str:
    """SHA-256 hex digest of a whole token string. A token carries 256 random bits, so a
    fast hash is enough (GitHub and django-rest-knox store tokens the same way; a slow
    password hasher would only slow down every API request)."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self, now: datetime | None = None):
        """Tokens neither revoked nor expired at ``now`` (UTC)."""
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A personal API token: shown once at creation, stored as its SHA-256 digest.

    The token string is ``pap_`` and 43 URL-safe characters; ``prefix`` keeps its first
    characters to tell tokens apart in lists, never enough to use one.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. “CI”.")
    prefix = models.CharField(max_length=16, help_text="First characters of the token.")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token.")
    scopes = models.JSONField(default=list, help_text="Scopes granted: read, run, jobs, clusters.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was made (UTC).")
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="When it stops working (UTC); empty: never."
    )
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="Last request made with it (UTC, to the minute)."
    )
    last_used_ip = models.GenericIPAddressField(
        null=True, blank=True, help_text="Address of that request."
    )
    revoked_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was revoked (UTC); it no longer works."
    )

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(
        cls, user, name: str, scopes: list[str], expires_in_days: int | None = None
    ) -> tuple["ApiToken", str]:
        """Create a token for ``user``; returns ``(row, token string)``. The string is never
        stored: show it once. Raises ValueError for an unknown scope or no scope."""
        unknown = sorted(set(scopes) - SCOPES.keys())
        if unknown or not scopes:
            raise ValueError(f"Unknown or missing scopes: {unknown or 'none given'}")
        token = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
        expires = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        row = cls.objects.create(
            user=user,
            name=name,
            prefix=token[: len(TOKEN_PREFIX) + 6],
            digest=digest(token),
            scopes=sorted(set(scopes), key=list(SCOPES).index),
            expires_at=expires,
        )
        return row, token

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and (
            self.expires_at is None or self.expires_at > timezone.now()
        )


class IdempotencyKey(models.Model):
    """An ``Idempotency-Key`` a user sent with "Run now", and the run it made: a retried
    request with the same key within IDEMPOTENCY_KEY_HOURS returns that run again."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=200)
    run = models.ForeignKey("jobs.Run", on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_run_per_idempotency_key")
        ]

    def __str__(self) -> str:
        return f"{self.key} -> run {self.run_id}"
