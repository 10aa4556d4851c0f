"""The verbs of clusters and SSH keys: one domain action, one transaction each.

No backend call happens in a request: views create or change rows and enqueue tasks;
tasks call ``start_cluster``, ``sync_clusters``, ``terminate_on_backend`` here. A run's
worker calls ``launch_cluster_for_run`` and ``terminate_now`` itself. Backends are used
only through their common interface (``clusters.backends.ClusterBackend``): nothing here
depends on which backend a cluster has. Expiry warnings go out once per expiry (a task
per cluster, a sent-at column under a row lock).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from clusters import keys
from clusters.backends import BackendError, ClusterStatus, get_backend
from clusters.models import Cluster, SSHKey
from notify import services as notify
from portal.mail import send_templated
from quotas import limits, usage

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from jobs.models import Run

log = logging.getLogger(__name__)
State = Cluster.State


class ClusterError(ValueError):
    """A launch, extension or termination that is not allowed; the message says why.

    ``retry`` is True when the same request may succeed later without anyone changing
    anything (a per-user or per-host cap that frees up as clusters end)."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


# --- SSH keys ----------------------------------------------------------------------------


def add_ssh_key(user: User, title: str, raw: str) -> SSHKey:
    """Parse and store a public key for ``user``; raises SSHKeyError (bad key or duplicate)."""
    parsed = keys.parse_public_key(raw)
    existing = SSHKey.objects.filter(owner=user, fingerprint=parsed.fingerprint).first()
    if existing:
        raise keys.SSHKeyError(f"You already added this key, as “{existing.title}”.")
    try:
        with transaction.atomic():
            return SSHKey.objects.create(
                owner=user,
                title=title.strip() or parsed.comment or parsed.key_type,
                key=parsed.text,
                key_type=parsed.key_type,
                bits=parsed.bits,
                fingerprint=parsed.fingerprint,
                comment=parsed.comment,
            )
    except IntegrityError:
        raise keys.SSHKeyError("You already added this key.") from None


# --- Launching -------------------------------------------------------------------------------


@dataclass
class ClusterSpec:
    """What a user asks for when launching a cluster (validated by the form)."""

    name: str
    backend: str = Cluster.Backend.LOCAL
    size: int = 1
    lifetime_hours: int = 8
    release: str = ""
    ssh_key: SSHKey | None = None


def suggest_name(user: User) -> str:
    """A readable name not used by the user's live clusters (e.g. "curie-2")."""
    names = [
        "curie",
        "lovelace",
        "hopper",
        "noether",
        "turing",
        "shannon",
        "franklin",
        "galois",
        "euler",
        "ramanujan",
    ]
    live = set(Cluster.objects.filter(owner=user).live().values_list("name", flat=True))
    count = Cluster.objects.filter(owner=user).count()
    for i in range(len(names) * 10):
        base = names[(count + i) % len(names)]
        candidate = base if i < len(names) else f"{base}-{i // len(names) + 1}"
        if candidate not in live:
            return candidate
    return f"cluster-{count + 1}"


def check_launch(user: User, spec: ClusterSpec, for_run: bool = False) -> None:
    """Raise ClusterError unless ``user`` may launch ``spec`` now: the backend is enabled
    (CLUSTER_BACKENDS), and the backend's per-user and per-host caps leave room (both
    with ``retry`` set: they free up as clusters end). A cluster launched by hand must
    also fit the size and lifetime bounds and have an SSH key of the user's where the
    backend needs one; a run's cluster (``for_run``) has its job's size and the run's
    lifetime, and no key.

    The per-user cap counts every live cluster of the user on the backend, whether
    launched by hand or for a run, and does not apply to staff; the per-host cap counts
    everyone's. (The budget is checked by ``launch_cluster``, under a lock.)
    """
    if spec.backend not in settings.CLUSTER_BACKENDS:
        if for_run:
            label = dict(Cluster.Backend.choices).get(spec.backend, spec.backend)
            raise ClusterError(
                f"This job runs on a fresh {label} cluster, but {label} is not enabled on "
                "this site: choose another Spark target."
            )
        raise ClusterError(f"The {spec.backend} backend is not enabled on this site.")
    backend = get_backend(spec.backend)
    if not for_run:
        _check_bounds(user, spec, backend.label, backend.requires_ssh_key)
    live = Cluster.objects.live().filter(backend=spec.backend)
    per_user, per_host = backend.max_per_user, backend.max_per_host
    if per_user is not None and not user.is_staff and live.filter(owner=user).count() >= per_user:
        raise ClusterError(
            f"You already have {per_user} live {backend.label.lower()} clusters "
            "(with those started for your runs): terminate one first.",
            retry=True,
        )
    if per_host is not None and live.count() >= per_host:
        raise ClusterError(
            f"This host runs as many {backend.label.lower()} clusters as it can; "
            "try again later or choose another backend.",
            retry=True,
        )


def _check_bounds(user: User, spec: ClusterSpec, label: str, requires_ssh_key: bool) -> None:
    """Raise ClusterError unless a cluster launched by hand fits the size and lifetime
    bounds (staff may exceed them) and has the SSH key its backend needs."""
    if spec.size < 1 or (spec.size > settings.CLUSTER_MAX_SIZE and not user.is_staff):
        raise ClusterError(f"A cluster has 1 to {settings.CLUSTER_MAX_SIZE} workers.")
    if spec.lifetime_hours < 1 or (
        spec.lifetime_hours > settings.CLUSTER_MAX_LIFETIME_HOURS and not user.is_staff
    ):
        raise ClusterError(
            f"A cluster lives 1 to {settings.CLUSTER_MAX_LIFETIME_HOURS} hours "
            "(extend it later if needed)."
        )
    if requires_ssh_key and spec.ssh_key is None:
        raise ClusterError(f"{label} clusters need an SSH key: add one first.")
    if spec.ssh_key is not None and spec.ssh_key.owner_id != user.pk:
        raise ClusterError("That SSH key is not yours.")


def launch_cluster(
    user: User, spec: ClusterSpec, for_run: Run | None = None, now: datetime | None = None
) -> Cluster:
    """Create the cluster row (PENDING), at today's price per node-hour, and, unless it is
    for a run (whose worker starts it), enqueue its start after commit.

    Raises ClusterError for anything not allowed (``check_launch``) or a name already used
    by one of the user's live clusters, and LimitExceeded when its nodes × lifetime would
    pass the user's monthly budget (``quotas.usage.check_budget``, checked with the user's
    row locked, so that concurrent launches are counted one after the other).
    """
    now = now or timezone.now()
    check_launch(user, spec, for_run=for_run is not None)
    release = spec.release or get_backend(spec.backend).default_release()
    try:
        with transaction.atomic():
            limits.lock_user(user.pk)
            usage.check_budget(
                user, Cluster.nodes_for(spec.backend, spec.size) * spec.lifetime_hours, now
            )
            cluster = Cluster.objects.create(
                owner=user,
                name=spec.name,
                backend=spec.backend,
                size=spec.size,
                lifetime_hours=spec.lifetime_hours,
                release=release,
                ssh_key=spec.ssh_key,
                expires_at=now + timedelta(hours=spec.lifetime_hours),
                for_run=for_run,
                price_per_node_hour=settings.CLUSTER_PRICE_PER_NODE_HOUR,
            )
            if for_run is None:
                _enqueue_start(cluster)
    except IntegrityError:
        raise ClusterError(f"You already have a live cluster named “{spec.name}”.") from None
    log.info(
        "launch cluster=%s owner=%s backend=%s size=%s",
        cluster.pk,
        user.pk,
        spec.backend,
        spec.size,
    )
    return cluster


def _enqueue_start(cluster: Cluster) -> None:
    from clusters.tasks import start_cluster_task  # clusters.tasks imports this module

    start_cluster_task.delay_on_commit(cluster.pk)


#: Seconds a run's cluster outlives the run's timeout, by backend: time to start (an EMR
#: cluster also waits for its step's bootstrap) before expiry would end it.
RUN_CLUSTER_MARGIN_SECONDS: dict[str, int] = {Cluster.Backend.LOCAL: 600, Cluster.Backend.EMR: 1800}


def run_cluster_hours(timeout_seconds: int, backend: str) -> int:
    """Lifetime in hours of a run's cluster on ``backend``: the run's timeout plus the
    backend's margin (RUN_CLUSTER_MARGIN_SECONDS), rounded up to whole hours, at least one."""
    margin = RUN_CLUSTER_MARGIN_SECONDS.get(backend, 0)
    return max(1, math.ceil((timeout_seconds + margin) / 3600))


def launch_cluster_for_run(
    run: Run, backend: str, margin_seconds: int, reuse_ready: bool = False
) -> Cluster:
    """The cluster for the current attempt of ``run``, of ``run.job``'s size, on
    ``backend``: launched PENDING (not started: the run's worker starts it), named
    ``run-<run id>-a<attempt>`` and owned by the job's owner. It lives the run's timeout
    plus ``margin_seconds``, rounded up to whole hours (at least one), so that expiry
    ends it even if the worker dies; a continuous run's cluster lives
    STREAM_EMR_LIFETIME_HOURS (its worker stops the run gracefully before then).

    A cluster an earlier attempt left is let go of (no longer the run's) and terminated,
    unless ``reuse_ready`` and it is READY: then it is returned as it is.

    Obeys what a launch by hand obeys but the size and lifetime bounds (``check_launch``
    with ``for_run``, and the owner's budget): raises ClusterError when the backend is not
    enabled (the run should fail) or a cap is full (``retry``: a later attempt may find
    room), LimitExceeded when the cluster would pass its owner's budget.
    """
    previous = Cluster.objects.filter(for_run=run).first()
    if previous is not None:
        if reuse_ready and previous.state == State.READY:
            return previous
        request_termination(previous, "Replaced by a new attempt.")
        Cluster.objects.filter(pk=previous.pk).update(for_run=None)
    if run.trigger == "continuous":  # (Run.Trigger.CONTINUOUS) its worker ends it first
        hours = settings.STREAM_EMR_LIFETIME_HOURS
    else:
        hours = max(1, math.ceil((run.timeout_seconds + margin_seconds) / 3600))
    spec = ClusterSpec(
        name=f"run-{run.pk}-a{run.attempt}",
        backend=backend,
        size=run.job.cluster_size,
        lifetime_hours=hours,
    )
    return launch_cluster(run.job.owner, spec, for_run=run)


def start_cluster(cluster_id: int) -> Cluster | None:
    """Start the backend cluster of a PENDING row; idempotent.

    The row is locked while the backend starts; a second delivery finds it STARTING with
    its start recorded and does nothing. On EMR a retry after a failure between the AWS
    call and the save adopts the cluster tagged with this row's UUID instead of
    launching another. A backend error ends the cluster FAILED.
    """
    with transaction.atomic():
        cluster = (
            Cluster.objects.select_for_update(of=("self",))
            .select_related("owner", "ssh_key")
            .filter(pk=cluster_id)
            .first()
        )
        if cluster is None or cluster.state not in (State.PENDING, State.STARTING):
            return cluster
        if cluster.started_at:  # a start was recorded: a duplicate delivery
            return cluster
        try:
            fields = get_backend(cluster.backend).start(cluster)
        except BackendError as exc:
            cluster.state, cluster.state_reason, cluster.terminated_at = (
                State.FAILED,
                str(exc)[:500],
                timezone.now(),
            )
            cluster.save(update_fields=["state", "state_reason", "terminated_at"])
            return cluster
        for name, value in fields.items():
            setattr(cluster, name, value)
        cluster.state = State.STARTING
        cluster.started_at = timezone.now()
        cluster.save()
    return cluster


def record_launch(cluster: Cluster, fields: dict[str, Any]) -> Cluster:
    """Store what a backend's ``start`` returned for a cluster started outside
    ``start_cluster`` (a run's EMR cluster) and mark it STARTING."""
    Cluster.objects.filter(pk=cluster.pk).update(
        **fields, state=State.STARTING, started_at=timezone.now()
    )
    cluster.refresh_from_db()
    return cluster


def sync_cluster(cluster: Cluster) -> Cluster:
    """Ask the backend for the cluster's state and record it. Backend errors are logged
    and leave the row as it was (the next sync tries again)."""
    cluster.refresh_from_db()  # the backend reads the row's state: the latest one
    if cluster.state not in (State.STARTING, State.READY, State.TERMINATING):
        return cluster
    try:
        status = get_backend(cluster.backend).describe(cluster)
    except BackendError as exc:
        log.warning("sync failed cluster=%s: %s", cluster.pk, exc)
        return cluster
    return _record_status(cluster, status)


def _record_status(described: Cluster, status: ClusterStatus) -> Cluster:
    """Record ``status``, what the backend said of ``described`` (the row as it was when
    asked). If the row changed state meanwhile (terminated, synced by another process)
    the answer may be stale and is dropped: the next sync asks again."""
    now = timezone.now()
    state = status.state
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=described.pk)
        if cluster.state in Cluster.FINAL_STATES or cluster.state != described.state:
            return cluster
        if cluster.state == State.TERMINATING and state in (State.STARTING, State.READY):
            state = State.TERMINATING  # asked to stop: never back to READY
        fields = {"state"}
        cluster.state = state
        counts = {
            "workers_registered": status.workers,
            "cores": status.cores,
            "memory_mb": status.memory_mb,
        }
        for name, value in counts.items():
            if value is not None:
                setattr(cluster, name, value)
                fields.add(name)
        if status.info.get("master_address"):
            cluster.master_address = status.info["master_address"]
            fields.add("master_address")
        # Keep the portal's own reason ("Expired at ...") over EMR's "Terminated by user
        # request"; a failure's reason always comes from the backend.
        if (
            status.reason
            and state in Cluster.FINAL_STATES
            and (state == State.FAILED or not cluster.state_reason)
        ):
            cluster.state_reason = status.reason[:500]
            fields.add("state_reason")
        if state == State.READY and not cluster.ready_at:
            cluster.ready_at = now
            fields.add("ready_at")
        if state in Cluster.FINAL_STATES and not cluster.terminated_at:
            cluster.terminated_at = now
            fields.add("terminated_at")
        cluster.save(update_fields=sorted(fields))
    if state == State.FAILED:
        get_backend(cluster.backend).clean_up(cluster)  # stop whatever half is left
    return cluster


def sync_clusters(backend: str) -> int:
    """Sync every live cluster of ``backend``, in as few backend calls as it allows (EMR:
    one batched ``list_clusters``). Returns the number of live clusters."""
    clusters = list(
        Cluster.objects.filter(
            backend=backend, state__in=(State.STARTING, State.READY, State.TERMINATING)
        )
    )
    if not clusters:
        return 0
    try:
        statuses = get_backend(backend).describe_many(clusters)
    except BackendError as exc:
        log.warning("%s sync failed: %s", backend, exc)
        return 0
    for cluster in clusters:
        if cluster.pk in statuses:
            _record_status(cluster, statuses[cluster.pk])
    return len(clusters)


def wait_until_ready(
    cluster: Cluster,
    timeout: float,
    interval: float = 0.5,
    on_poll: Callable[[], None] | None = None,
) -> Cluster:
    """Sync ``cluster`` until it is READY; raises ClusterError on FAILED or timeout
    (``timeout`` and ``interval`` in seconds).

    ``on_poll()`` is called before every sync (the run waiting on the cluster beats its
    heartbeat there); an exception from it ends the wait.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_poll is not None:
            on_poll()
        cluster = sync_cluster(Cluster.objects.get(pk=cluster.pk))
        if cluster.state == State.READY:
            return cluster
        if cluster.state not in (State.PENDING, State.STARTING):
            raise ClusterError(
                f"The cluster did not start: {cluster.state_reason or cluster.state}"
            )
        time.sleep(interval)
    raise ClusterError(f"The cluster was not ready after {timeout:.0f} s.")


# --- Lifetime ------------------------------------------------------------------------------


def extend_cluster(cluster: Cluster, hours: int, user: User) -> Cluster:
    """Push the expiry back by ``hours``; a new warning will be sent before the new expiry.

    Raises ClusterError if the cluster is not live, ``hours`` is out of 1 to
    CLUSTER_MAX_EXTENSION_HOURS, or the total lifetime would pass CLUSTER_MAX_LIFETIME_HOURS
    (staff may exceed both); LimitExceeded if nodes × ``hours`` more would pass the owner's
    monthly budget (``quotas.usage.check_budget``).
    """
    if hours < 1 or (hours > settings.CLUSTER_MAX_EXTENSION_HOURS and not user.is_staff):
        raise ClusterError(f"Extend by 1 to {settings.CLUSTER_MAX_EXTENSION_HOURS} hours.")
    with transaction.atomic():
        limits.lock_user(cluster.owner_id)
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if cluster.state not in (State.PENDING, State.STARTING, State.READY):
            raise ClusterError("Only a live cluster can be extended.")
        usage.check_budget(cluster.owner, cluster.nodes * hours)
        new_expiry = cluster.expires_at + timedelta(hours=hours)
        total = (new_expiry - cluster.created_at).total_seconds() / 3600
        if total > settings.CLUSTER_MAX_LIFETIME_HOURS and not user.is_staff:
            raise ClusterError(
                f"A cluster lives at most {settings.CLUSTER_MAX_LIFETIME_HOURS} hours in all."
            )
        cluster.expires_at = new_expiry
        cluster.extension_count = F("extension_count") + 1
        cluster.expiry_warning_sent_at = None
        cluster.save(update_fields=["expires_at", "extension_count", "expiry_warning_sent_at"])
    cluster.refresh_from_db()
    return cluster


def rotate_connect_token(cluster: Cluster, user: User) -> Cluster:
    """Give a READY local cluster a new gateway token (``clusters.gateway.gateway_token``):
    the connection string changes, and the gateway refuses the old token from its next
    refresh (SPARK_CONNECT_GATEWAY_REFRESH seconds). Sessions opened with the old token
    end with their next request.

    The token the Connect server requires (``connect_token``, which the cluster's runs use
    on loopback) stays: a running Connect server cannot change its token, and the gateway
    puts the server's token on every request it passes. Raises ClusterError unless
    ``user`` owns the cluster (staff included) and it is a READY local cluster."""
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if cluster.owner_id != user.pk:
            raise ClusterError("Only the cluster's owner can rotate its token.")
        if cluster.backend != Cluster.Backend.LOCAL or cluster.state != State.READY:
            raise ClusterError("Only a ready local cluster has a token to rotate.")
        # backend_info is written whole only at the start (before READY): this key stays.
        info = dict(cluster.backend_info)
        info["gateway_generation"] = int(info.get("gateway_generation", 0)) + 1
        cluster.backend_info = info
        cluster.save(update_fields=["backend_info"])
    log.info("rotate gateway token cluster=%s owner=%s", cluster.pk, user.pk)
    return cluster


def _mark_terminating(cluster: Cluster, reason: str) -> bool:
    """Move a live cluster to TERMINATING with ``reason``; False if it was not live."""
    return bool(
        Cluster.objects.filter(
            pk=cluster.pk, state__in=(State.PENDING, State.STARTING, State.READY)
        ).update(state=State.TERMINATING, state_reason=reason[:500])
    )


def request_termination(cluster: Cluster, reason: str = "Terminated by its owner.") -> Cluster:
    """Mark a live cluster TERMINATING and enqueue ``terminate_on_backend`` after commit
    (what views, the admin and expiry do: no backend call in this process). Asking to
    terminate a cluster that is already terminating or ended does nothing."""
    from clusters.tasks import stop_cluster_task  # clusters.tasks imports this module

    with transaction.atomic():
        if _mark_terminating(cluster, reason):
            stop_cluster_task.delay_on_commit(cluster.pk)
    return Cluster.objects.get(pk=cluster.pk)


def terminate_now(cluster: Cluster, reason: str) -> Cluster | None:
    """Mark a live cluster TERMINATING and terminate it on its backend here, before
    returning (what a run's worker does with its own cluster); no task is enqueued. A
    cluster already TERMINATING is terminated too; an ended one is left alone."""
    _mark_terminating(cluster, reason)
    return terminate_on_backend(cluster.pk)


def terminate_on_backend(cluster_id: int) -> Cluster | None:
    """Terminate a TERMINATING cluster on its backend (the body of ``stop_cluster_task``),
    then record what the backend says: TERMINATED when its processes are gone (local),
    or still TERMINATING until a sync sees the end (EMR). Backend errors are logged and
    leave it TERMINATING. Does nothing to a cluster in another state."""
    cluster = Cluster.objects.select_related("owner").filter(pk=cluster_id).first()
    if cluster is None or cluster.state != State.TERMINATING:
        return cluster
    try:
        get_backend(cluster.backend).terminate(cluster)
    except BackendError as exc:
        log.warning("terminate failed cluster=%s: %s", cluster.pk, exc)
        return cluster
    if cluster.jobflow_id:  # store an EMR id that terminate() found (a lost launch save)
        Cluster.objects.filter(pk=cluster.pk, jobflow_id="").update(jobflow_id=cluster.jobflow_id)
    return sync_cluster(cluster)


def warn_expiring_clusters(now: datetime | None = None) -> int:
    """Enqueue, after commit, an expiry warning (``send_expiry_warning``) for every cluster
    that expires within CLUSTER_EXPIRY_WARNING_SECONDS and was not warned for its current
    expiry. Returns how many were enqueued (a cluster whose warning is not sent yet may
    be enqueued again by the next pass: the task sends once)."""
    from clusters.tasks import send_expiry_warning as task  # clusters.tasks imports this module

    now = now or timezone.now()
    before = now + timedelta(seconds=settings.CLUSTER_EXPIRY_WARNING_SECONDS)
    ids = list(
        Cluster.objects.expiring(before).filter(for_run__isnull=True).values_list("pk", flat=True)
    )
    for cluster_id in ids:
        task.delay_on_commit(cluster_id)
    return len(ids)


def send_expiry_warning(cluster_id: int, now: datetime | None = None) -> bool:
    """E-mail the owner of a cluster that expires within CLUSTER_EXPIRY_WARNING_SECONDS,
    and record the event for the owner's notification targets that chose it
    (``notify.services.record_cluster_expiring``), at most once per expiry (an extension
    clears ``expiry_warning_sent_at``).

    The row stays locked from the check to the update of ``expiry_warning_sent_at``, so
    repeated or concurrent calls send one message; a failed send (OSError, e.g. SMTP)
    raises and leaves the cluster unwarned, for a retry. (A crash between the SMTP
    hand-off and the commit would send it again: we accept that over losing a warning.)
    Returns True if a message was sent.
    """
    now = now or timezone.now()
    before = now + timedelta(seconds=settings.CLUSTER_EXPIRY_WARNING_SECONDS)
    with transaction.atomic():
        cluster = (
            Cluster.objects.expiring(before)
            .filter(pk=cluster_id, for_run__isnull=True)
            .select_for_update(of=("self",))
            .select_related("owner")
            .first()
        )
        if cluster is None:  # warned already, extended, ended or gone
            return False
        sent = False
        if cluster.owner.email:
            context = {
                "cluster": cluster,
                "url": settings.PORTAL_ORIGIN + cluster.get_absolute_url(),
                "minutes": max(0, int((cluster.expires_at - now).total_seconds() // 60)),
            }
            send_templated("clusters/emails/expiry", context, [cluster.owner.email])
            sent = True
        # The owner's chat and webhook targets that chose "cluster about to expire", sent
        # by their own tasks after commit (a failed e-mail above rolls these back too).
        notify.record_cluster_expiring(cluster, now)
        cluster.expiry_warning_sent_at = now
        cluster.save(update_fields=["expiry_warning_sent_at"])
    return sent


def terminate_expired_clusters(now: datetime | None = None) -> int:
    """Request the termination of every live cluster past its expiry; returns how many."""
    now = now or timezone.now()
    count = 0
    for cluster in Cluster.objects.expired(now):
        request_termination(cluster, reason=f"Expired at {cluster.expires_at:%Y-%m-%d %H:%M} UTC.")
        count += 1
    return count


def usage_by_user(since: datetime | None = None) -> list[dict]:
    """Node-hours and estimated cost per owner for clusters started since ``since``."""
    qs = Cluster.objects.filter(started_at__isnull=False).select_related("owner")
    if since:
        qs = qs.filter(started_at__gte=since)
    totals: dict[int, dict] = {}
    for cluster in qs:
        row = totals.setdefault(
            cluster.owner_id,
            {"owner": cluster.owner, "clusters": 0, "node_hours": 0.0, "cost": 0.0},
        )
        row["clusters"] += 1
        row["node_hours"] += cluster.node_hours
        row["cost"] += cluster.estimated_cost
    return sorted(totals.values(), key=lambda r: -r["node_hours"])
