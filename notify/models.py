"""Notifications beyond e-mail: a job's targets (Apprise chat URLs and signed webhooks), and
the log of every delivery to them.

E-mail stays where it was (``Job.notify_on_failure`` / ``notify_on_success``, sent by
``jobs.services.alerts``): it is the target every job has. The rows here hold state only;
``notify.services`` creates, sends and retries deliveries.
"""

import secrets
import uuid
from urllib.parse import urlsplit

from django.db import models
from django.urls import reverse


class Event(models.TextChoices):
    """What a target may be told about. The values are the ``event`` of the webhook
    payload (docs/notifications.md)."""

    RUN_FAILED = "run.failed", "Run failed (failed, timed out or lost)"
    RUN_SUCCEEDED = "run.succeeded", "Run succeeded"
    RUN_RECOVERED = "run.recovered", "Run recovered (first success after failures)"
    RUN_LONG = "run.long_running", "Run took longer than expected"
    CLUSTER_EXPIRING = "cluster.expiring", "One of my clusters is about to expire"
    JOB_PAUSED = "job.paused", "Continuous job paused after too many failed runs"


#: Events a new target starts with: what someone on call wants to hear. (A continuous
#: job's runs send no run events: its failures come as one ``job.paused``.)
DEFAULT_EVENTS = [Event.RUN_FAILED.value, Event.RUN_RECOVERED.value, Event.JOB_PAUSED.value]


def new_secret() -> str:
    """A webhook signing secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


class NotificationTarget(models.Model):
    """Where a job's events go besides e-mail: a chat service through an Apprise URL, or a
    generic webhook that receives the signed JSON payload."""

    class Kind(models.TextChoices):
        APPRISE = "apprise", "Chat (Apprise URL)"
        WEBHOOK = "webhook", "Webhook (signed JSON)"

    job = models.ForeignKey(
        "jobs.Job",
        on_delete=models.CASCADE,
        related_name="notification_targets",
        help_text="The job whose events the target hears; cluster events come from the "
        "clusters of the job's owner.",
    )
    kind = models.CharField(
        max_length=10, choices=Kind.choices, help_text="Chat through Apprise, or a webhook."
    )
    name = models.CharField(
        max_length=100, blank=True, help_text="A label for people, e.g. “#data-oncall”."
    )
    url = models.CharField(
        max_length=2000,
        help_text="The Apprise URL (slack://, discord://, mmosts://, workflows://, jsons://...) "
        "or the webhook's https:// URL. It may hold a token: only the job's owner and staff "
        "see it.",
    )
    secret = models.CharField(
        max_length=64,
        blank=True,
        help_text="Webhooks: the HMAC-SHA256 key of X-Portal-Signature. Shown to the owner "
        "once, when made or regenerated; kept in clear because every delivery signs with it.",
    )
    events = models.JSONField(
        default=list, blank=True, help_text="The events sent to this target (Event values)."
    )
    enabled = models.BooleanField(default=True, help_text="Disabled targets are sent nothing.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was added (UTC).")

    class Meta:
        ordering = ["job", "id"]

    def __str__(self) -> str:
        return self.name or self.display_url

    def get_absolute_url(self) -> str:
        return reverse("targets-edit", args=[self.pk])

    def wants(self, event: str) -> bool:
        """Whether the target is enabled and chose ``event``."""
        return self.enabled and event in self.events

    @property
    def display_url(self) -> str:
        """The URL without what may be secret: scheme and host only (an Apprise URL's
        "host" may itself be a token, so it is cut to its first characters)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if self.kind == self.Kind.APPRISE and len(host) > 12:
            host = host[:6] + "…"
        return f"{parts.scheme}://{host}/…"

    def event_labels(self) -> list[str]:
        return [Event(e).label for e in self.events if e in Event.values]

    def regenerate_secret(self) -> str:
        """Set a new signing secret (not saved); returns it."""
        self.secret = new_secret()
        return self.secret


class DeliveryQuerySet(models.QuerySet):
    def due(self, before):
        """Pending deliveries whose next attempt (or whose lease) is before ``before``."""
        return self.filter(state=Delivery.State.PENDING, next_attempt_at__lt=before)


class Delivery(models.Model):
    """One event for one target: its payload, frozen when the event happened, and where
    its sending stands. Retries send the same body (signed again, with the target's
    current secret) under the same ``uuid``, so a receiver can drop duplicates."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text="Public id: the X-Portal-Delivery header and the payload's id.",
    )
    target = models.ForeignKey(
        NotificationTarget,
        on_delete=models.CASCADE,
        related_name="deliveries",
        help_text="Where it goes.",
    )
    job = models.ForeignKey(
        "jobs.Job",
        on_delete=models.CASCADE,
        related_name="deliveries",
        help_text="The job whose page shows it in the delivery log (the target's job).",
    )
    event = models.CharField(max_length=20, choices=Event.choices, help_text="What happened.")
    key = models.CharField(
        max_length=100,
        help_text="What the delivery is about, once per target: run:<id>:outcome, "
        "run:<id>:long, cluster:<id>:<expiry>, job:<id>:paused:<pause time>.",
    )
    run = models.ForeignKey(
        "jobs.Run",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        help_text="The run the event is about, if any (job.paused: the last failed run).",
    )
    cluster = models.ForeignKey(
        "clusters.Cluster",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        help_text="The cluster the event is about, if any.",
    )
    body = models.TextField(help_text="The JSON payload, exactly as sent (and signed).")
    state = models.CharField(
        max_length=10,
        choices=State.choices,
        default=State.PENDING,
        help_text="Pending until a 2xx answer (delivered) or the last attempt (failed).",
    )
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Attempts started.")
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the next attempt is due (UTC); while one runs, when its lease ends.",
    )
    last_error = models.CharField(
        max_length=300, blank=True, help_text="Why the last attempt failed."
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the event happened (UTC).")
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was delivered or given up (UTC)."
    )

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["target", "key"], name="one_delivery_per_target_key")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="delivery_due_idx")]

    def __str__(self) -> str:
        return f"{self.event} to {self.target_id} ({self.state})"


class DeliveryAttempt(models.Model):
    """One try at sending a delivery: the delivery log's line."""

    delivery = models.ForeignKey(
        Delivery,
        on_delete=models.CASCADE,
        related_name="attempt_log",
        help_text="The delivery tried.",
    )
    number = models.PositiveSmallIntegerField(help_text="1 for the first attempt, then 2, 3...")
    at = models.DateTimeField(help_text="When the attempt started (UTC).")
    status_code = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="HTTP status of the answer (webhooks); empty if none."
    )
    error = models.CharField(
        max_length=300, blank=True, help_text="What went wrong; empty when delivered."
    )
    seconds = models.FloatField(default=0.0, help_text="How long the attempt took, in seconds.")

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}"

    @property
    def ok(self) -> bool:
        return not self.error
