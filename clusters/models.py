"""Ad-hoc Spark clusters, their SSH keys, and the EMR releases staff offer."""

import secrets
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


class SSHKey(models.Model):
    """A user's SSH public key, installed on the master of their EMR clusters."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="ssh_keys",
        help_text="Whose key it is.",
    )
    title = models.CharField(max_length=100, help_text="A name to recognise the key by.")
    key = models.TextField(help_text="The public key in OpenSSH format (one line).")
    key_type = models.CharField(max_length=40, help_text="Algorithm, e.g. ssh-ed25519.")
    bits = models.PositiveIntegerField(help_text="Key size in bits.")
    fingerprint = models.CharField(
        max_length=100, help_text="SHA256 fingerprint, as ssh-keygen -l prints it."
    )
    comment = models.CharField(
        max_length=200, blank=True, help_text="The key's comment (usually user@host)."
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was added (UTC).")

    class Meta:
        ordering = ["title", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "fingerprint"], name="unique_key_per_owner")
        ]
        verbose_name = "SSH key"

    def __str__(self):
        return f"{self.title} ({self.fingerprint})"


class EMRReleaseQuerySet(models.QuerySet):
    def offered(self):
        """Releases users may pick: active, stable first, then experimental, deprecated last."""
        order = models.Case(
            models.When(status=EMRRelease.Status.STABLE, then=0),
            models.When(status=EMRRelease.Status.EXPERIMENTAL, then=1),
            default=2,
        )
        return self.filter(is_active=True).order_by(order, "-label")


class EMRRelease(models.Model):
    """An EMR release label staff offer for clusters (e.g. emr-7.5.0)."""

    class Status(models.TextChoices):
        STABLE = "stable", "Stable"
        EXPERIMENTAL = "experimental", "Experimental"
        DEPRECATED = "deprecated", "Deprecated"

    label = models.CharField(
        max_length=40, primary_key=True, help_text="EMR release label, e.g. emr-7.5.0."
    )
    spark_version = models.CharField(
        max_length=20, blank=True, help_text="Spark version of the release, for display."
    )
    status = models.CharField(
        max_length=20,
        choices=Status.choices,
        default=Status.STABLE,
        help_text="How it is offered to users.",
    )
    is_active = models.BooleanField(default=True, help_text="Inactive releases are not offered.")
    notes = models.CharField(
        max_length=300, blank=True, help_text="Shown next to the release in the launch form."
    )

    objects = EMRReleaseQuerySet.as_manager()

    class Meta:
        ordering = ["-label"]
        verbose_name = "EMR release"

    def __str__(self):
        suffix = (
            "" if self.status == self.Status.STABLE else f" ({self.get_status_display().lower()})"
        )
        return f"{self.label}{suffix}"


def new_connect_token() -> str:
    """A fresh Spark Connect token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class ClusterQuerySet(models.QuerySet):
    def visible_to(self, user):
        return self if user.is_staff else self.filter(owner=user)

    def live(self):
        """Clusters that exist or may soon: PENDING, STARTING, READY, TERMINATING."""
        return self.filter(state__in=Cluster.LIVE_STATES)

    def expiring(self, before: datetime):
        """Live clusters whose expiry is before ``before`` and whose warning is not sent."""
        return self.filter(
            state__in=(Cluster.State.STARTING, Cluster.State.READY),
            expires_at__lte=before,
            expiry_warning_sent_at__isnull=True,
        )

    def expired(self, now: datetime):
        return self.filter(
            state__in=(Cluster.State.PENDING, Cluster.State.STARTING, Cluster.State.READY),
            expires_at__lte=now,
        )


class Cluster(models.Model):
    """An ad-hoc Spark cluster with a lifetime, on a backend (local standalone or EMR)."""

    class State(models.TextChoices):
        PENDING = "PENDING", "Pending"
        STARTING = "STARTING", "Starting"
        READY = "READY", "Ready"
        TERMINATING = "TERMINATING", "Terminating"
        TERMINATED = "TERMINATED", "Terminated"
        FAILED = "FAILED", "Failed"

    class Backend(models.TextChoices):
        LOCAL = "local", "Local Spark standalone"
        EMR = "emr", "AWS EMR"

    LIVE_STATES = (State.PENDING, State.STARTING, State.READY, State.TERMINATING)
    FINAL_STATES = (State.TERMINATED, State.FAILED)

    uuid = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text="Public id; tags the cluster on its backend.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="clusters",
        help_text="Who launched it.",
    )
    name = models.CharField(
        max_length=100, help_text="A short name, unique among the owner's live clusters."
    )
    backend = models.CharField(
        max_length=10,
        choices=Backend.choices,
        default=Backend.LOCAL,
        help_text="Where the cluster runs.",
    )
    size = models.PositiveSmallIntegerField(
        default=1, help_text="Number of workers (core nodes on EMR)."
    )
    lifetime_hours = models.PositiveSmallIntegerField(
        default=8, help_text="Lifetime asked for at launch, in hours."
    )
    release = models.CharField(
        max_length=40, blank=True, help_text="Spark version (local) or EMR release label."
    )
    ssh_key = models.ForeignKey(
        SSHKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="clusters",
        help_text="Key installed on the EMR master.",
    )
    for_run = models.OneToOneField(
        "jobs.Run",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="own_cluster",
        help_text="The run this cluster was started for (terminated when the run ends).",
    )
    state = models.CharField(
        max_length=12,
        choices=State.choices,
        default=State.PENDING,
        db_index=True,
        help_text="Where the cluster is in its life.",
    )
    state_reason = models.CharField(
        max_length=500, blank=True, help_text="Why it failed or was terminated."
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was requested (UTC).")
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the backend started it (UTC)."
    )
    ready_at = models.DateTimeField(null=True, blank=True, help_text="When it became READY (UTC).")
    expires_at = models.DateTimeField(help_text="When it is terminated unless extended (UTC).")
    terminated_at = models.DateTimeField(null=True, blank=True, help_text="When it ended (UTC).")
    expiry_warning_sent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the expiry warning went out for the current expiry (UTC).",
    )
    extension_count = models.PositiveSmallIntegerField(
        default=0, help_text="How many times it was extended."
    )
    workers_registered = models.PositiveSmallIntegerField(
        default=0, help_text="Workers the master knows about."
    )
    cores = models.PositiveIntegerField(default=0, help_text="Total worker cores.")
    memory_mb = models.PositiveIntegerField(default=0, help_text="Total worker memory, MB.")
    master_url = models.CharField(
        max_length=200, blank=True, help_text="spark:// URL of the master (local)."
    )
    ui_url = models.CharField(max_length=200, blank=True, help_text="Spark master web UI.")
    app_ui_url = models.CharField(
        max_length=200, blank=True, help_text="Web UI of the cluster's Spark Connect application."
    )
    connect_url = models.CharField(
        max_length=200, blank=True, help_text="sc:// URL of the Spark Connect server."
    )
    connect_token = models.CharField(
        max_length=64,
        default=new_connect_token,
        editable=False,
        help_text="Bearer token the Spark Connect server requires; given only to the owner's runs.",
    )
    master_address = models.CharField(
        max_length=255, blank=True, help_text="Public DNS name of the EMR master."
    )
    jobflow_id = models.CharField(
        max_length=50, blank=True, db_index=True, help_text="EMR cluster id (j-...)."
    )
    backend_info = models.JSONField(
        default=dict, blank=True, help_text="What the backend recorded: process ids, ports, host."
    )
    price_per_node_hour = models.FloatField(
        null=True,
        blank=True,
        help_text="Estimated price of a node-hour at its launch (CLUSTER_PRICE_PER_NODE_HOUR "
        "then), so that its cost does not change with the setting; empty: today's setting.",
    )

    objects = ClusterQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"],
                condition=Q(state__in=["PENDING", "STARTING", "READY", "TERMINATING"]),
                name="unique_live_cluster_name",
            )
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("clusters-detail", args=[self.pk])

    @property
    def connect_address(self) -> tuple[str, int]:
        """``(host, port)`` of the Spark Connect server, from ``connect_url``."""
        parts = urlsplit(self.connect_url.replace("sc://", "http://", 1))
        return parts.hostname or "", parts.port or 15002

    @property
    def is_live(self) -> bool:
        return self.state in self.LIVE_STATES

    @staticmethod
    def nodes_for(backend: str, size: int) -> int:
        """Machines billed for a cluster of ``size`` workers on ``backend``: the workers,
        plus the master on EMR (a local master is a process beside the workers)."""
        return size + (1 if backend == Cluster.Backend.EMR else 0)

    @property
    def nodes(self) -> int:
        """Machines billed: workers, plus the master on EMR."""
        return self.nodes_for(self.backend, self.size)

    @property
    def duration(self) -> timedelta | None:
        start = self.started_at or None
        if start is None:
            return None
        return (self.terminated_at or timezone.now()) - start

    @property
    def node_hours(self) -> float:
        """Node-hours used so far (whole duration, not ATMO's timedelta.seconds bug): nodes
        × hours from its start to its end (to now while it lives). Once it ended (its
        ``terminated_at`` is set with its final state) the figure no longer changes."""
        duration = self.duration
        return round(self.nodes * duration.total_seconds() / 3600, 3) if duration else 0.0

    @property
    def price(self) -> float:
        """Estimated price of one of its node-hours: the one in force at its launch."""
        if self.price_per_node_hour is not None:
            return self.price_per_node_hour
        return settings.CLUSTER_PRICE_PER_NODE_HOUR

    @property
    def estimated_cost(self) -> float:
        """``node_hours`` × ``price``, rounded to cents: final once it ended."""
        return round(self.node_hours * self.price, 2)

    @property
    def progress_percent(self) -> int:
        if self.state == self.State.READY:
            return 100
        if self.state == self.State.STARTING:
            return 20 + int(70 * self.workers_registered / max(1, self.size))
        return 5 if self.state == self.State.PENDING else 0
