"""The verbs of clusters and SSH keys: one domain action, one transaction each.

No backend call happens in a request: views create or change rows and enqueue tasks;
tasks call ``start_cluster``, ``sync_cluster``, ``stop_cluster`` here. Expiry warnings
and terminations are periodic and exactly-once (row locks plus a sent-at column).
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone

from clusters import keys
from clusters.backends import BackendError, get_backend
from clusters.models import Cluster, SSHKey

log = logging.getLogger(__name__)
State = Cluster.State


class ClusterError(ValueError):
    """A launch, extension or termination that is not allowed; the message says why."""


# --- SSH keys ----------------------------------------------------------------------------


def add_ssh_key(user, title: str, raw: str) -> SSHKey:
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


def suggest_name(user) -> str:
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


def check_launch(user, spec: ClusterSpec) -> None:
    """Raise ClusterError unless ``user`` may launch ``spec`` now (sizes, lifetimes, limits)."""
    if spec.backend not in settings.CLUSTER_BACKENDS:
        raise ClusterError(f"The {spec.backend} backend is not enabled on this site.")
    if spec.size < 1 or (spec.size > settings.CLUSTER_MAX_SIZE and not user.is_staff):
        raise ClusterError(f"A cluster has 1 to {settings.CLUSTER_MAX_SIZE} workers.")
    if spec.lifetime_hours < 1 or (
        spec.lifetime_hours > settings.CLUSTER_MAX_LIFETIME_HOURS and not user.is_staff
    ):
        raise ClusterError(
            f"A cluster lives 1 to {settings.CLUSTER_MAX_LIFETIME_HOURS} hours "
            "(extend it later if needed)."
        )
    if spec.backend == Cluster.Backend.EMR and spec.ssh_key is None:
        raise ClusterError("EMR clusters need an SSH key: add one first.")
    if spec.ssh_key is not None and spec.ssh_key.owner_id != user.pk:
        raise ClusterError("That SSH key is not yours.")
    if spec.backend == Cluster.Backend.LOCAL:
        live = Cluster.objects.live().filter(backend=Cluster.Backend.LOCAL)
        if (
            live.filter(owner=user, for_run__isnull=True).count()
            >= settings.LOCAL_CLUSTER_MAX_PER_USER
            and not user.is_staff
        ):
            raise ClusterError(
                f"You already have {settings.LOCAL_CLUSTER_MAX_PER_USER} live local clusters: "
                "terminate one first."
            )
        if live.count() >= settings.LOCAL_CLUSTER_MAX_PER_HOST:
            raise ClusterError(
                "This host runs as many local clusters as it can; try again later or use EMR."
            )


def launch_cluster(user, spec: ClusterSpec, for_run=None, now: datetime | None = None) -> Cluster:
    """Create the cluster row (PENDING) and enqueue its start after commit.

    Raises ClusterError for anything not allowed (see ``check_launch``) or a name already
    used by one of the user's live clusters.
    """
    now = now or timezone.now()
    if for_run is None:
        check_launch(user, spec)
    release = spec.release or (
        settings.LOCAL_SPARK_VERSION if spec.backend == Cluster.Backend.LOCAL else ""
    )
    try:
        with transaction.atomic():
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


def _enqueue_start(cluster):
    from clusters.tasks import start_cluster_task

    pk = cluster.pk
    transaction.on_commit(lambda: start_cluster_task.delay(pk))


def start_cluster(cluster_id: int) -> Cluster | None:
    """Start the backend cluster of a PENDING row; idempotent.

    The row is locked while the backend starts; a second delivery finds it STARTING with
    its backend ids recorded and does nothing. On EMR a retry after a failure between the
    AWS call and the save adopts the cluster tagged with this row's UUID instead of
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
        if cluster.backend_info.get("pids") or cluster.jobflow_id:
            return cluster
        backend = get_backend(cluster.backend)
        try:
            info = backend.start(cluster)
        except BackendError as exc:
            cluster.state, cluster.state_reason, cluster.terminated_at = (
                State.FAILED,
                str(exc)[:500],
                timezone.now(),
            )
            cluster.save(update_fields=["state", "state_reason", "terminated_at"])
            return cluster
        cluster.state = State.STARTING
        cluster.started_at = cluster.started_at or timezone.now()
        if cluster.backend == Cluster.Backend.EMR:
            cluster.jobflow_id = info["jobflow_id"]
        else:
            cluster.backend_info = info
            cluster.master_url, cluster.ui_url = info["master_url"], info["ui_url"]
            cluster.connect_url, cluster.app_ui_url = info["connect_url"], info["app_ui_url"]
        cluster.save()
    return cluster


def record_launch(cluster: Cluster, info: dict) -> Cluster:
    """Store what an EMR launch returned (job flow id) and mark the cluster STARTING."""
    Cluster.objects.filter(pk=cluster.pk).update(
        jobflow_id=info["jobflow_id"], state=State.STARTING, started_at=timezone.now()
    )
    cluster.refresh_from_db()
    return cluster


def sync_cluster(cluster: Cluster) -> Cluster:
    """Ask the backend for the cluster's state and record it. Backend errors are logged
    and leave the row as it was (the next sync tries again)."""
    if cluster.state not in (State.STARTING, State.READY, State.TERMINATING):
        return cluster
    try:
        status = get_backend(cluster.backend).describe(cluster)
    except BackendError as exc:
        log.warning("sync failed cluster=%s: %s", cluster.pk, exc)
        return cluster
    return _record_status(cluster, status.state, status)


def _record_status(cluster: Cluster, state: str, status=None) -> Cluster:
    now = timezone.now()
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if cluster.state in Cluster.FINAL_STATES:
            return cluster
        if cluster.state == State.TERMINATING and state in (State.STARTING, State.READY):
            state = State.TERMINATING  # asked to stop: never back to READY
        if (
            cluster.state == State.TERMINATING
            and state == State.FAILED
            and cluster.backend == Cluster.Backend.LOCAL
        ):
            # Processes exiting because we stopped them is the termination, not a failure;
            # it is complete only when none of them is left.
            from clusters.backends.local import LocalBackend

            done = not LocalBackend().processes_left(cluster.backend_info or {})
            state, status = (State.TERMINATED if done else State.TERMINATING), None
        fields = {"state"}
        cluster.state = state
        if status is not None:
            cluster.workers_registered, cluster.cores, cluster.memory_mb = (
                status.workers,
                status.cores,
                status.memory_mb,
            )
            fields |= {"workers_registered", "cores", "memory_mb"}
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
    if state == State.FAILED and cluster.backend == Cluster.Backend.LOCAL:
        get_backend(cluster.backend).terminate(cluster)  # stop whatever half is left
    return cluster


def sync_clusters(backend: str) -> int:
    """Sync every live cluster of ``backend``; EMR in one batched ``list_clusters`` call.
    Returns the number synced."""
    clusters = list(
        Cluster.objects.filter(
            backend=backend, state__in=(State.STARTING, State.READY, State.TERMINATING)
        )
    )
    if backend == Cluster.Backend.EMR and clusters:
        engine = get_backend(backend)
        try:
            oldest = min(c.created_at for c in clusters) - timedelta(hours=1)
            states = engine.states(
                [c.jobflow_id for c in clusters if c.jobflow_id], created_after=oldest
            )
        except BackendError as exc:
            log.warning("EMR sync failed: %s", exc)
            return 0
        from clusters.backends.emr import STATE_MAP

        for cluster in clusters:
            emr_state = states.get(cluster.jobflow_id)
            if emr_state is None:
                continue
            new = STATE_MAP.get(emr_state, State.STARTING)
            if new != cluster.state or (new == State.READY and not cluster.master_address):
                sync_cluster(cluster)  # describe for the details (address, reason)
        return len(clusters)
    for cluster in clusters:
        sync_cluster(cluster)
    return len(clusters)


def wait_until_ready(
    cluster: Cluster, timeout: float, interval: float = 0.5, on_poll=None
) -> Cluster:
    """Sync ``cluster`` until it is READY; raises ClusterError on FAILED or timeout.

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


def extend_cluster(cluster: Cluster, hours: int, user) -> Cluster:
    """Push the expiry back by ``hours``; a new warning will be sent before the new expiry.

    Raises ClusterError if the cluster is not live, ``hours`` is out of 1 to
    CLUSTER_MAX_EXTENSION_HOURS, or the total lifetime would pass CLUSTER_MAX_LIFETIME_HOURS
    (staff may exceed both).
    """
    if hours < 1 or (hours > settings.CLUSTER_MAX_EXTENSION_HOURS and not user.is_staff):
        raise ClusterError(f"Extend by 1 to {settings.CLUSTER_MAX_EXTENSION_HOURS} hours.")
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if cluster.state not in (State.PENDING, State.STARTING, State.READY):
            raise ClusterError("Only a live cluster can be extended.")
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


def terminate_cluster(cluster: Cluster, reason: str = "Terminated by its owner.") -> Cluster:
    """Mark a live cluster TERMINATING and enqueue the backend termination after commit.
    Terminating a cluster that already ended does nothing."""
    from clusters.tasks import stop_cluster_task

    with transaction.atomic():
        moved = Cluster.objects.filter(
            pk=cluster.pk, state__in=(State.PENDING, State.STARTING, State.READY)
        ).update(state=State.TERMINATING, state_reason=reason[:500])
        if moved:
            pk = cluster.pk
            transaction.on_commit(lambda: stop_cluster_task.delay(pk))
    return Cluster.objects.get(pk=cluster.pk)


def stop_cluster(cluster_id: int) -> Cluster | None:
    """Terminate a TERMINATING cluster on its backend (the task's body). Local clusters
    are TERMINATED when their processes are gone; EMR ones when a sync sees it."""
    cluster = Cluster.objects.select_related("owner").filter(pk=cluster_id).first()
    if cluster is None or cluster.state != State.TERMINATING:
        return cluster
    try:
        get_backend(cluster.backend).terminate(cluster)
    except BackendError as exc:
        log.warning("terminate failed cluster=%s: %s", cluster.pk, exc)
        return cluster
    if (
        cluster.jobflow_id
        and not Cluster.objects.filter(pk=cluster.pk, jobflow_id=cluster.jobflow_id).exists()
    ):
        Cluster.objects.filter(pk=cluster.pk).update(jobflow_id=cluster.jobflow_id)
    if cluster.backend == Cluster.Backend.LOCAL or not cluster.jobflow_id:
        # Local processes are gone now; an EMR cluster that was never launched has nothing
        # left to wait for (start_cluster holds the row lock while launching, and a crashed
        # launch is adopted by find_existing, which terminate() just consulted).
        return _record_status(cluster, State.TERMINATED)
    return sync_cluster(cluster)


def warn_expiring_clusters(now: datetime | None = None) -> int:
    """E-mail owners whose clusters expire within CLUSTER_EXPIRY_WARNING_SECONDS, once per
    expiry (an extension clears ``expiry_warning_sent_at``). Returns the number warned."""
    now = now or timezone.now()
    before = now + timedelta(seconds=settings.CLUSTER_EXPIRY_WARNING_SECONDS)
    sent = 0
    with transaction.atomic():
        for cluster in (
            Cluster.objects.expiring(before)
            .filter(for_run__isnull=True)
            .select_for_update(skip_locked=True)
            .select_related("owner")
        ):
            if cluster.owner.email:
                context = {
                    "cluster": cluster,
                    "url": settings.PORTAL_ORIGIN + cluster.get_absolute_url(),
                    "minutes": max(0, int((cluster.expires_at - now).total_seconds() // 60)),
                }
                send_mail(
                    render_to_string("clusters/emails/expiry_subject.txt", context).strip(),
                    render_to_string("clusters/emails/expiry.txt", context),
                    None,
                    [cluster.owner.email],
                )
                sent += 1
            Cluster.objects.filter(pk=cluster.pk).update(expiry_warning_sent_at=now)
    return sent


def terminate_expired_clusters(now: datetime | None = None) -> int:
    """Terminate every live cluster past its expiry; returns how many."""
    now = now or timezone.now()
    count = 0
    for cluster in Cluster.objects.expired(now):
        terminate_cluster(cluster, reason=f"Expired at {cluster.expires_at:%Y-%m-%d %H:%M} UTC.")
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
