"""The verbs of notifications: keep a job's targets, record the events they chose as
deliveries, and send each delivery with retries.

How an event travels (docs/notifications.md):

1. Something happens: a run ends (``jobs.services.alerts.send_alert_on_commit`` enqueues
   ``notify.tasks.notify_run`` beside the e-mail), a run passes its job's expected
   duration (``record_long_runs``, every NOTIFY_TICK_INTERVAL s), a cluster is about to
   expire (``clusters.services.send_expiry_warning``), the supervisor pauses a continuous
   job after too many failures (``jobs.services.alerts.send_stream_paused_alert``, beside
   its e-mail). A continuous job's runs send nothing of their own: a flapping stream
   would repeat itself at every restart.
2. ``record_*`` creates one ``Delivery`` per target that chose the event, with its payload
   frozen, at most once per target and subject (a unique key), and enqueues
   ``deliver_notification`` for it after commit. A run's finish never waits for any of it.
3. ``deliver`` claims the delivery (a conditional UPDATE on the attempt count), sends it,
   logs the attempt, and on failure schedules the next one after ``portal.backoff``'s
   delay, up to NOTIFY_MAX_ATTEMPTS. A beat pass (``resend_due``) sends again what a lost
   message or a killed worker left behind. Each delivery is its own task: a failing
   target never holds up another.

Delivery is at least once (a worker killed after the receiver answered sends again):
receivers drop duplicates by the X-Portal-Delivery id.
"""

import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import apprise
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from clusters.models import Cluster
from jobs.models import Job, Run
from notify import network, payloads
from notify.models import Delivery, DeliveryAttempt, Event, NotificationTarget, new_secret
from portal.backoff import backoff
from quotas.limits import LimitExceeded

log = logging.getLogger(__name__)

#: The header that carries the signature, and its scheme prefix.
SIGNATURE_HEADER = "X-Portal-Signature"


def sign(secret: str, body: bytes) -> str:
    """The X-Portal-Signature value of ``body``: ``sha256=`` and the hex HMAC-SHA256 of
    the raw body under ``secret`` (UTF-8), as GitHub signs its webhooks."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- Targets ----------------------------------------------------------------------------------


def check_url(kind: str, url: str) -> None:
    """Raise ValidationError (field "url") unless ``url`` is one the portal sends to:

    - webhook: http(s), no credentials in it, a host that resolves only to addresses
      ``notify.network`` allows (global ones, or NOTIFY_ALLOWED_NETWORKS);
    - apprise: a URL Apprise understands, whose scheme is in NOTIFY_APPRISE_SCHEMES; when
      its plugin connects to a host taken from the URL (json://, mmosts://,
      workflows://...), the same address rule applies.

    The same rule is checked again at each delivery (DNS may have changed).
    """
    url = url.strip()
    try:
        if kind == NotificationTarget.Kind.WEBHOOK:
            network.check_webhook_url(url)
            return
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        allowed = settings.NOTIFY_APPRISE_SCHEMES
        if scheme not in allowed:
            raise ValueError(
                f"Use one of the chat services this portal offers: "
                f"{', '.join(s + '://' for s in allowed)}."
            )
        plugin = _apprise_plugin(url)
        if "host" in plugin.template_tokens:
            network.check_host(plugin.host, plugin.port, bool(plugin.secure))
    except (ValueError, OSError) as exc:
        raise ValidationError({"url": str(exc)}) from None


def _apprise_plugin(url: str) -> Any:
    """Apprise's notifier for ``url`` with redirects off and the portal's timeouts; raises
    ValueError if Apprise does not understand the URL."""
    asset = apprise.AppriseAsset(storage_mode="memory")
    plugin = apprise.Apprise.instantiate(url, asset=asset)
    if plugin is None:
        raise ValueError("Apprise does not understand this URL: see its documentation.")
    plugin.redirects = False  # a redirect's target would be checked too, but need not be
    plugin.socket_connect_timeout = settings.NOTIFY_TIMEOUT
    plugin.socket_read_timeout = settings.NOTIFY_TIMEOUT
    return plugin


def save_target(target: NotificationTarget) -> tuple[NotificationTarget, str | None]:
    """Check and save ``target`` (new or changed); returns it and, for a new webhook, its
    signing secret (shown once; None otherwise).

    Raises ValidationError for an unknown kind, no or unknown events, or a URL refused by
    ``check_url``; LimitExceeded past NOTIFY_MAX_TARGETS_PER_JOB targets on the job.
    """
    target.url = target.url.strip()
    if target.kind not in NotificationTarget.Kind.values:
        raise ValidationError({"kind": "Choose chat or webhook."})
    unknown = sorted(set(target.events) - set(Event.values))
    if unknown or not target.events:
        raise ValidationError({"events": "Choose one or more of the events offered."})
    check_url(target.kind, target.url)
    secret = None
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=target.job_id)  # serialise the count
        if target.pk is None:
            count = job.notification_targets.count()
            if count >= settings.NOTIFY_MAX_TARGETS_PER_JOB:
                raise LimitExceeded(
                    f"A job may have at most {settings.NOTIFY_MAX_TARGETS_PER_JOB} "
                    "notification targets besides e-mail: remove one first."
                )
        if target.kind == NotificationTarget.Kind.WEBHOOK and not target.secret:
            secret = target.secret = new_secret()
        elif target.kind != NotificationTarget.Kind.WEBHOOK:
            target.secret = ""
        target.save()
    return target, secret


def regenerate_secret(target: NotificationTarget) -> str:
    """Give webhook ``target`` a new signing secret and return it (shown once). Deliveries
    still pending are signed with the new one. Raises ValueError for a chat target."""
    if target.kind != NotificationTarget.Kind.WEBHOOK:
        raise ValueError("Only webhooks have a signing secret.")
    secret = target.regenerate_secret()
    target.save(update_fields=["secret"])
    return secret


def delete_target(target: NotificationTarget) -> None:
    """Remove ``target`` and its delivery log; pending deliveries are dropped with it."""
    target.delete()


# --- Events -----------------------------------------------------------------------------------


def _body(data: dict[str, Any]) -> str:
    return DjangoJSONEncoder(ensure_ascii=False, sort_keys=True).encode(data)


def _record(
    target: NotificationTarget,
    event: str,
    key: str,
    make_payload: Any,
    *,
    run: Run | None = None,
    cluster: Cluster | None = None,
) -> Delivery | None:
    """Create the delivery of ``event`` to ``target`` for subject ``key`` unless one exists
    (the unique (target, key)), and enqueue it after commit; returns it if created.
    ``make_payload(delivery_uuid)`` builds the payload."""
    from notify.tasks import deliver_notification  # notify.tasks imports this module

    delivery_id = uuid.uuid4()
    delivery, created = Delivery.objects.get_or_create(
        target=target,
        key=key,
        defaults={
            "uuid": delivery_id,
            "job_id": target.job_id,
            "event": event,
            "run": run,
            "cluster": cluster,
            "body": _body(make_payload(delivery_id)),
            "next_attempt_at": timezone.now(),
        },
    )
    if not created:
        return None
    deliver_notification.delay_on_commit(delivery.pk)
    log.info("notify delivery=%s target=%s event=%s key=%s", delivery.pk, target.pk, event, key)
    return delivery


def outcome_events(run: Run) -> list[str]:
    """The events of finished ``run``'s outcome, most specific first: ["run.failed"],
    ["run.recovered", "run.succeeded"] for a success whose job's previous outcome was a
    failure, ["run.succeeded"], or [] (cancelled, skipped).

    "Previous" is the job's last run that ended failed, timed out, lost or succeeded
    before this one (by end time). Two runs of one job ending at the same moment may both
    see the same previous outcome: we accept that imprecision.
    """
    if run.is_failure:
        return [Event.RUN_FAILED]
    if run.state != Run.State.SUCCEEDED:
        return []
    previous = (
        Run.objects.filter(
            job_id=run.job_id,
            state__in=(*Run.FAILURE_STATES, Run.State.SUCCEEDED),
            finished_at__isnull=False,
        )
        .exclude(pk=run.pk)
        .filter(Q(finished_at__lt=run.finished_at) | Q(finished_at=run.finished_at, pk__lt=run.pk))
        .order_by("-finished_at", "-pk")
        .first()
    )
    if previous is not None and previous.is_failure:
        return [Event.RUN_RECOVERED, Event.RUN_SUCCEEDED]
    return [Event.RUN_SUCCEEDED]


def _ran_long(run: Run, now: datetime) -> bool:
    """Whether ``run``'s current attempt has gone (or went) past its job's expected
    duration."""
    expected = run.job.expected_duration_seconds
    if not expected or run.started_at is None:
        return False
    return ((run.finished_at or now) - run.started_at).total_seconds() > expected


def record_run_outcome(run_id: int, now: datetime | None = None) -> list[Delivery]:
    """Record the deliveries of finished run ``run_id``: to each enabled target of its job,
    the most specific outcome event it chose (a target that chose both "recovered" and
    "succeeded" hears "recovered" only: one message per run); and "ran longer than
    expected" if the run went past its job's expected duration without a tick noticing.
    A continuous run (trigger CONTINUOUS) records nothing: its job is restarted after each
    failure and tells its targets once, when it is paused (``record_job_paused``).
    Repeated calls add nothing. Returns the deliveries created."""
    now = now or timezone.now()
    with transaction.atomic():
        run = Run.objects.select_related("job").filter(pk=run_id).first()
        if run is None or not run.is_final or run.trigger == Run.Trigger.CONTINUOUS:
            return []
        events = outcome_events(run)
        made = []
        for target in run.job.notification_targets.filter(enabled=True):
            event = next((e for e in events if target.wants(e)), None)
            if event is not None:
                made.append(
                    _record(
                        target,
                        event,
                        f"run:{run.pk}:outcome",
                        lambda d, event=event: payloads.run_payload(d, event, run, now, None),
                        run=run,
                    )
                )
        if _ran_long(run, now):
            made += _record_long(run, now)
    return [d for d in made if d is not None]


def _record_long(run: Run, now: datetime) -> list[Delivery | None]:
    expected = run.job.expected_duration_seconds
    return [
        _record(
            target,
            Event.RUN_LONG,
            f"run:{run.pk}:long",
            lambda d: payloads.run_payload(d, Event.RUN_LONG, run, now, expected),
            run=run,
        )
        for target in run.job.notification_targets.filter(enabled=True)
        if target.wants(Event.RUN_LONG)
    ]


def record_long_runs(now: datetime | None = None) -> int:
    """Record "ran longer than expected" for every RUNNING run past its job's expected
    duration (``Job.expected_duration_seconds``, from the start of its current attempt),
    once per run and target. Beat calls it every NOTIFY_TICK_INTERVAL s, so the event
    comes at most that late; a run that ends first gets it from ``record_run_outcome``.
    Continuous runs are left out: they are meant to run until stopped. Returns how many
    deliveries were created."""
    now = now or timezone.now()
    running = (
        Run.objects.filter(
            state=Run.State.RUNNING,
            started_at__isnull=False,
            job__expected_duration_seconds__isnull=False,
        )
        .exclude(trigger=Run.Trigger.CONTINUOUS)
        .select_related("job")
    )
    count = 0
    for run in running:
        if _ran_long(run, now):
            with transaction.atomic():
                count += sum(1 for d in _record_long(run, now) if d is not None)
    return count


def record_job_paused(job_id: int, failures: int) -> list[Delivery]:
    """Record ``job.paused`` for continuous job ``job_id``, which the supervisor paused (at
    ``Job.stream_paused_at``) after ``failures`` failed runs within its window: to each
    enabled target of the job that chose it, once per target and pause (the key holds the
    pause's time, so repeated calls, such as a retry of the e-mail task that calls this,
    add nothing; a later pause makes a new one). The payload names the last failed run
    and its error. Nothing for a job that was never paused. Returns the deliveries
    created."""
    with transaction.atomic():
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.stream_paused_at is None:
            return []
        last = (
            job.runs.filter(trigger=Run.Trigger.CONTINUOUS, state__in=Run.FAILURE_STATES)
            .order_by("-finished_at", "-id")
            .first()
        )
        key = f"job:{job.pk}:paused:{job.stream_paused_at:%Y%m%dT%H%M%S.%f}"
        made = [
            _record(
                target,
                Event.JOB_PAUSED,
                key,
                lambda d: payloads.job_paused_payload(d, job, failures, last),
                run=last,
            )
            for target in job.notification_targets.filter(enabled=True)
            if target.wants(Event.JOB_PAUSED)
        ]
    return [d for d in made if d is not None]


def record_cluster_expiring(cluster: Cluster, now: datetime) -> list[Delivery]:
    """Record "cluster about to expire" for ``cluster`` to its owner's targets that chose
    it: the targets of any of the owner's jobs, one per distinct URL, once per expiry (an
    extension makes a new one). Call it inside the transaction that marks the warning
    sent. Returns the deliveries created."""
    seen: set[tuple[str, str]] = set()
    made = []
    targets = NotificationTarget.objects.filter(job__owner_id=cluster.owner_id, enabled=True)
    for target in targets.order_by("id"):
        if not target.wants(Event.CLUSTER_EXPIRING) or (target.kind, target.url) in seen:
            continue
        seen.add((target.kind, target.url))
        made.append(
            _record(
                target,
                Event.CLUSTER_EXPIRING,
                f"cluster:{cluster.pk}:{cluster.expires_at:%Y%m%dT%H%M%S}",
                lambda d: payloads.cluster_payload(d, cluster, now),
                cluster=cluster,
            )
        )
    return [d for d in made if d is not None]


# --- Sending ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the HTTP status (webhooks), an error ("" when delivered), and
    whether trying again is pointless (the URL is refused or invalid)."""

    status_code: int | None = None
    error: str = ""
    final: bool = False


def _send_webhook(delivery: Delivery, target: NotificationTarget) -> Answer:
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "AnalysisPortal-Webhook/1",
        "X-Portal-Event": delivery.event,
        "X-Portal-Delivery": str(delivery.uuid),
        SIGNATURE_HEADER: sign(target.secret, body),
    }
    try:
        response = network.post_json(target.url, body, headers, settings.NOTIFY_TIMEOUT)
    except network.RefusedAddress as exc:
        return Answer(error=f"refused: {exc}", final=True)
    except ValueError as exc:
        return Answer(error=f"refused: {exc}", final=True)
    except Exception as exc:  # httpx.HTTPError, Unresolvable, TLS errors: worth a retry
        return Answer(error=f"{type(exc).__name__}: {exc}")
    code = response.status_code
    if 200 <= code < 300:
        return Answer(status_code=code)
    if 300 <= code < 400:
        where = response.headers.get("location", "")
        return Answer(status_code=code, error=f"HTTP {code}: redirect to {where} not followed")
    return Answer(status_code=code, error=f"HTTP {code} {response.reason_phrase}".strip())


def _send_apprise(delivery: Delivery, target: NotificationTarget) -> Answer:
    try:
        plugin = _apprise_plugin(target.url)
        if "host" in plugin.template_tokens:
            network.check_host(plugin.host, plugin.port, bool(plugin.secure))
    except network.Unresolvable as exc:
        return Answer(error=str(exc))
    except (ValueError, OSError) as exc:
        return Answer(error=f"refused: {exc}", final=True)
    title, body, kind = payloads.chat_message(_load(delivery.body))
    with apprise.LogCapture(level=logging.WARNING) as captured, network.guarded_connections():
        ok = plugin.notify(title=title, body=body, notify_type=kind)
    if ok:
        return Answer()
    lines = [line for line in captured.getvalue().splitlines() if line.strip()]
    return Answer(error=(lines[-1].split(" - ", 2)[-1] if lines else "Apprise could not send"))


def _load(body: str) -> dict[str, Any]:
    return json.loads(body)


#: Seconds a claimed attempt owns its delivery before ``resend_due`` may send it again:
#: past the hard time limit of ``deliver_notification`` (90 s), so never while it runs.
LEASE_SECONDS = 120.0


def deliver(delivery_id: int, now: datetime | None = None) -> Delivery | None:
    """Make one attempt at sending delivery ``delivery_id``, if it is pending and due.

    The claim is one conditional UPDATE (attempt count + 1, next attempt pushed to the
    end of a lease), so a duplicate message or a racing ``resend_due`` finds nothing to
    do. The attempt is logged (time, HTTP status or error, number); the delivery is then
    delivered (2xx), failed (a refused URL, or NOTIFY_MAX_ATTEMPTS used), or rescheduled
    after ``backoff(attempt, NOTIFY_RETRY_BACKOFF, NOTIFY_RETRY_MAX_DELAY)`` seconds with
    a delayed task. Every write after the send is fenced by the attempt number. Returns
    the delivery as it now stands, or None when there was nothing to claim. Never raises
    for the receiver's faults.
    """
    from notify.tasks import deliver_notification  # notify.tasks imports this module

    now = now or timezone.now()
    delivery = (
        Delivery.objects.select_related("target")
        .filter(pk=delivery_id, state=Delivery.State.PENDING)
        .first()
    )
    if delivery is None or (delivery.next_attempt_at and delivery.next_attempt_at > now):
        return None
    target = delivery.target
    number = delivery.attempts + 1
    claimed = Delivery.objects.filter(
        pk=delivery.pk, state=Delivery.State.PENDING, attempts=delivery.attempts
    ).update(attempts=number, next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
    if not claimed:
        return None
    mine = Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.PENDING, attempts=number)
    if not target.enabled:
        mine.update(
            state=Delivery.State.FAILED,
            finished_at=now,
            next_attempt_at=None,
            last_error="The target was disabled.",
        )
        return Delivery.objects.get(pk=delivery.pk)
    started = time.monotonic()
    try:
        if target.kind == NotificationTarget.Kind.WEBHOOK:
            answer = _send_webhook(delivery, target)
        else:
            answer = _send_apprise(delivery, target)
    except Exception as exc:  # a bug here must not leave the delivery claimed for long
        log.exception("notify delivery=%s attempt=%s failed", delivery.pk, number)
        answer = Answer(error=f"{type(exc).__name__}: {exc}")
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=number,
        at=now,
        status_code=answer.status_code,
        error=answer.error[:300],
        seconds=round(time.monotonic() - started, 3),
    )
    ended = timezone.now()
    if not answer.error:
        mine.update(
            state=Delivery.State.DELIVERED, finished_at=ended, next_attempt_at=None, last_error=""
        )
    elif answer.final or number >= settings.NOTIFY_MAX_ATTEMPTS:
        mine.update(
            state=Delivery.State.FAILED,
            finished_at=ended,
            next_attempt_at=None,
            last_error=answer.error[:300],
        )
        log.warning("notify delivery=%s gave up after %s: %s", delivery.pk, number, answer.error)
    else:
        delay = backoff(number, settings.NOTIFY_RETRY_BACKOFF, settings.NOTIFY_RETRY_MAX_DELAY)
        if mine.update(
            next_attempt_at=ended + timedelta(seconds=delay), last_error=answer.error[:300]
        ):
            log.info(
                "notify delivery=%s attempt=%s failed, retrying in %.0fs: %s",
                delivery.pk,
                number,
                delay,
                answer.error,
            )
            deliver_notification.apply_async((delivery.pk,), countdown=delay)
    return Delivery.objects.get(pk=delivery.pk)


def resend_due(now: datetime | None = None) -> int:
    """Enqueue every pending delivery due more than NOTIFY_TICK_INTERVAL s ago: its
    message was lost, or the worker of its attempt died past the lease. A delivery whose
    message is merely late gets a second one, which finds nothing to claim. Returns how
    many were enqueued."""
    from notify.tasks import deliver_notification

    now = now or timezone.now()
    before = now - timedelta(seconds=settings.NOTIFY_TICK_INTERVAL)
    ids = list(Delivery.objects.due(before).values_list("pk", flat=True)[:500])
    for delivery_id in ids:
        deliver_notification.delay(delivery_id)
    return len(ids)
