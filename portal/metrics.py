"""Prometheus metrics for operators: ``GET /metrics``, in Prometheus' text format (or
OpenMetrics when the scraper asks for it).

Every value is read from the database and the broker at each scrape by ``PortalCollector``,
a prometheus-client custom collector: there are no in-process counters, which would differ
between the web, worker and beat processes and reset with each of them. What is counted
"recently" is over ``RECENT_WINDOW`` (the last hour), so a histogram here is a gauge
histogram: a snapshot of that window, not a counter since start-up (no ``rate()`` on it).

Access: ``Authorization: Bearer <METRICS_TOKEN>``, compared in constant time. With no
METRICS_TOKEN the endpoint does not exist (404); a missing or malformed header is 401, a
wrong token 403. It is exempt from sign-in (Prometheus has no session), and the
user-content host never reaches it (``portal.usercontent`` answers that host first).
Users appear by id only: no e-mail address or name goes into a metric. README "Metrics"
lists the metrics, with example alert rules.
"""

import hashlib
import hmac
import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, Max
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from clusters.models import Cluster
from jobs.models import Run

log = logging.getLogger(__name__)

#: Runs that finished (duration) or started (lag) this long before a scrape are in its
#: histograms.
RECENT_WINDOW = timedelta(hours=1)
#: Upper bounds (seconds) of the run duration buckets: a second to a day.
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
#: Upper bounds (seconds) of the slot → start lag buckets: the fairness target is seconds.
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Seconds the broker may take to connect or answer before it counts as down.
BROKER_TIMEOUT = 2.0


def queue_names() -> list[str]:
    """The Celery queues the portal uses: those of CELERY_TASK_ROUTES and the default
    queue, sorted."""
    names = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    names.add(settings.CELERY_TASK_DEFAULT_QUEUE)
    return sorted(names)


def queue_depths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each of ``queues`` on the Redis broker: ``{queue: count}``.

    Kombu keeps a queue as one Redis list per priority step (the queue's name, then
    ``name + sep + step``), under CELERY_BROKER_TRANSPORT_OPTIONS' ``global_keyprefix``;
    this counts them all. Messages a worker has reserved but not acknowledged are not in
    them. Raises ``redis.RedisError`` (or ``OSError``) when the broker cannot be reached
    within BROKER_TIMEOUT seconds.
    """
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=BROKER_TIMEOUT,
        socket_timeout=BROKER_TIMEOUT,
    )
    queues = list(queues)
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                for step in PRIORITY_STEPS:
                    key = queue if not step else f"{queue}{Channel.sep}{step}"
                    pipe.llen(f"{prefix}{key}")
            lengths = pipe.execute()
    finally:
        client.close()
    steps = len(PRIORITY_STEPS)
    return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}


def _buckets(values: Sequence[float], bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of ``values`` over ``bounds``, ending with +Inf."""
    pairs: list[tuple[str, float]] = [
        (str(float(b)), float(sum(1 for v in values if v <= b))) for b in bounds
    ]
    pairs.append(("+Inf", float(len(values))))
    return pairs


class PortalCollector:
    """Reads the portal's state at each scrape and yields it as metric families.

    ``now`` fixes the moment of the scrape (aware, UTC); by default the time of each
    ``collect``. Database errors propagate (the scrape fails, and Prometheus' ``up`` says
    so); a broker that is down only drops the queue depths (``portal_broker_up`` 0).
    """

    def __init__(self, now: datetime | None = None):
        self.now = now

    def collect(self) -> Iterator[Metric]:
        now = self.now or timezone.now()
        yield from self._runs(now)
        yield from self._broker()
        yield from self._clusters()
        yield from self._users()

    def _runs(self, now: datetime) -> Iterator[Metric]:
        counts = {
            row["state"]: row["n"]
            for row in Run.objects.order_by().values("state").annotate(n=Count("id"))
        }
        runs = GaugeMetricFamily("portal_runs", "Runs in each state.", labels=["state"])
        for state in Run.State:
            runs.add_metric([state.value], counts.get(state.value, 0))
        yield runs

        since = now - RECENT_WINDOW
        durations: dict[str, list[float]] = {}
        for final, started, finished in Run.objects.filter(
            finished_at__gte=since, finished_at__lte=now, started_at__isnull=False
        ).values_list("state", "started_at", "finished_at"):
            if started and finished:
                seconds = max((finished - started).total_seconds(), 0.0)
                durations.setdefault(final, []).append(seconds)
        duration = GaugeHistogramMetricFamily(
            "portal_run_duration_seconds",
            "Duration (start of the last attempt to the end) of the runs that finished in "
            "the last hour, by final state.",
            labels=["state"],
        )
        for final in sorted(durations):
            values = durations[final]
            duration.add_metric([final], _buckets(values, DURATION_BUCKETS), sum(values))
        yield duration

        lags = [
            max((started - slot).total_seconds(), 0.0)
            for slot, started in Run.objects.filter(
                scheduled_for__isnull=False, started_at__gte=since, started_at__lte=now
            ).values_list("scheduled_for", "started_at")
            if slot and started
        ]
        yield GaugeHistogramMetricFamily(
            "portal_run_start_lag_seconds",
            "Schedule slot to start of the current attempt, for scheduled runs that started "
            "in the last hour.",
            buckets=_buckets(lags, LAG_BUCKETS),
            gsum_value=sum(lags),
        )

        last = Run.objects.aggregate(last=Max("started_at"))["last"]
        if last is not None:
            yield GaugeMetricFamily(
                "portal_run_last_started_timestamp_seconds",
                "When the most recent run attempt started (Unix time).",
                value=last.timestamp(),
            )

    def _broker(self) -> Iterator[Metric]:
        queues = queue_names()
        try:
            depths = queue_depths(queues)
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: broker unavailable: %s", exc)
            depths = None
        yield GaugeMetricFamily(
            "portal_broker_up",
            "1 when the Redis broker answered this scrape, else 0 (queue depths are then absent).",
            value=0 if depths is None else 1,
        )
        if depths is not None:
            depth = GaugeMetricFamily(
                "portal_queue_depth",
                "Messages waiting on each Celery queue (not those reserved by a worker).",
                labels=["queue"],
            )
            for queue in queues:
                depth.add_metric([queue], depths[queue])
            yield depth

    def _clusters(self) -> Iterator[Metric]:
        live = GaugeMetricFamily(
            "portal_clusters", "Live clusters by backend and state.", labels=["backend", "state"]
        )
        node_hours = GaugeMetricFamily(
            "portal_cluster_node_hours",
            "Node-hours used so far by the live clusters of each backend.",
            labels=["backend"],
        )
        counts: dict[tuple[str, str], int] = {}
        hours: dict[str, float] = {b.value: 0.0 for b in Cluster.Backend}
        # Live clusters are few (capped per user and per host): read them whole and use
        # the model's own node-hours.
        for cluster in Cluster.objects.live().only(
            "backend", "state", "size", "started_at", "terminated_at"
        ):
            key = (cluster.backend, cluster.state)
            counts[key] = counts.get(key, 0) + 1
            hours[cluster.backend] = hours.get(cluster.backend, 0.0) + cluster.node_hours
        for backend in Cluster.Backend:
            for state in Cluster.LIVE_STATES:
                live.add_metric([backend.value, state.value], counts.get((backend, state), 0))
        for backend_name, value in sorted(hours.items()):
            node_hours.add_metric([backend_name], value)
        yield live
        yield node_hours

    def _users(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "portal_user_running_runs",
            "Running runs of each user (by user id) who has any.",
            labels=["user"],
        )
        for owner, n in _count_by_owner(Run.objects.filter(state=Run.State.RUNNING)):
            running.add_metric([str(owner)], n)
        yield running
        held = GaugeMetricFamily(
            "portal_user_held_runs",
            "QUEUED runs of each user (by user id) held back by their concurrency limit.",
            labels=["user"],
        )
        for owner, n in _count_by_owner(
            Run.objects.filter(state=Run.State.QUEUED, held_since__isnull=False)
        ):
            held.add_metric([str(owner)], n)
        yield held


def _count_by_owner(runs) -> list[tuple[int, int]]:
    """``[(owner id, count)]`` of ``runs`` (a Run QuerySet), by owner id."""
    rows = runs.order_by("job__owner_id").values("job__owner_id").annotate(n=Count("id"))
    return [(row["job__owner_id"], row["n"]) for row in rows]


def _token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison that leaks neither the content nor the length of the
    token: both sides are hashed to 32 bytes first."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


@login_not_required
@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: the portal's metrics for Prometheus. 404 when METRICS_TOKEN is
    empty, 401 without ``Authorization: Bearer ...``, 403 for a wrong token."""
    expected = settings.METRICS_TOKEN
    if not expected:
        raise Http404("Metrics are off: set METRICS_TOKEN.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        response = HttpResponse("A bearer token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not _token_matches(given.strip(), expected):
        return HttpResponse("Wrong token.\n", status=403)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)
