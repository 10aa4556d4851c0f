"""What the Usage page shows: one user's month (totals, by day, by job, by cluster, the
budgets), and for staff every user's month side by side.

Attribution: a run counts in the month and on the day it was created (UTC), with all its
attempts' figures; a cluster's node-hours count when they were spent (``quotas.usage``).
Stored bytes are what is stored now (notebook versions, and run outputs not expired),
whatever the month.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from clusters.models import Cluster
from jobs.models import Job, NotebookVersion, Run
from quotas import usage
from quotas.limits import limits_by_owner, limits_for
from quotas.usage import BudgetStatus

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@dataclass
class Totals:
    """Use in one month: ``runs`` (not skipped), CPU-hours and wall-hours of those runs,
    node-hours and estimated cost of clusters, and bytes stored now."""

    runs: int = 0
    cpu_hours: float = 0.0
    wall_hours: float = 0.0
    node_hours: float = 0.0
    cost: float = 0.0
    stored_bytes: int = 0


@dataclass
class JobRow:
    """One job's line: its runs in the month; ``node_hours`` and ``cost`` of the clusters
    its runs started for themselves."""

    job: Job
    totals: Totals = field(default_factory=Totals)


@dataclass
class ClusterRow:
    """One cluster's share of the month."""

    cluster: Cluster
    node_hours: float
    cost: float


@dataclass
class MonthReport:
    """One user's month starting at ``start`` (UTC). ``days`` is the chart: one entry per
    day up to today, ``{"day", "runs", "cpu_hours", "node_hours"}``."""

    start: datetime
    totals: Totals
    jobs: list[JobRow]
    clusters: list[ClusterRow]
    days: list[dict[str, object]]
    budgets: list[BudgetStatus]


def _runs(start: datetime, end: datetime) -> QuerySet[Run]:
    return Run.objects.filter(created_at__gte=start, created_at__lt=end).exclude(
        state=Run.State.SKIPPED
    )


def _days(start: datetime, end: datetime, now: datetime) -> list[date]:
    last = min(end - timedelta(microseconds=1), max(now, start)).date()
    first = start.date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def stored_bytes_by_owner(owner_ids: set[int] | None = None) -> dict[int, int]:
    """Bytes stored now per owner: their notebook versions, and their runs' outputs that
    were not expired (``Run.output_bytes``)."""
    versions = NotebookVersion.objects.all()
    runs = Run.objects.filter(output_expired_at__isnull=True)
    if owner_ids is not None:
        versions = versions.filter(job__owner_id__in=owner_ids)
        runs = runs.filter(job__owner_id__in=owner_ids)
    stored: dict[int, int] = defaultdict(int)
    for rows in (
        versions.values("job__owner_id").annotate(b=Sum("size_bytes")),
        runs.values("job__owner_id").annotate(b=Sum("output_bytes")),
    ):
        for row in rows:
            stored[row["job__owner_id"]] += row["b"] or 0
    return dict(stored)


def month_report(user: User, start: datetime, now: datetime | None = None) -> MonthReport:
    """The Usage page of ``user`` for the month starting at ``start``."""
    now = now or timezone.now()
    end = usage.next_month(start)
    days = _days(start, end, now)
    by_day: dict[date, dict[str, float]] = {
        d: {"runs": 0, "cpu_hours": 0.0, "node_hours": 0.0} for d in days
    }
    totals = Totals()

    # Runs, by job and by day.
    jobs: dict[int, JobRow] = {
        job.pk: JobRow(job) for job in Job.objects.filter(owner=user).order_by("name", "pk")
    }
    runs = _runs(start, end).filter(job__owner=user).select_related("cluster")
    for run in runs:
        line = jobs[run.job_id].totals
        line.runs += 1
        line.cpu_hours += (run.cpu_seconds or 0) / 3600
        line.wall_hours += (run.wall_seconds or 0) / 3600
        if run.node_hours:
            price = run.cluster.price if run.cluster else settings.CLUSTER_PRICE_PER_NODE_HOUR
            line.node_hours += run.node_hours
            line.cost += run.node_hours * price
        day = by_day.get(run.created_at.astimezone(UTC).date())
        if day is not None:
            day["runs"] += 1
            day["cpu_hours"] += (run.cpu_seconds or 0) / 3600
    for pk, size in (
        NotebookVersion.objects.filter(job__owner=user)
        .values_list("job_id")
        .annotate(b=Sum("size_bytes"))
    ):
        jobs[pk].totals.stored_bytes += size or 0
    for pk, size in (
        Run.objects.filter(job__owner=user, output_expired_at__isnull=True)
        .values_list("job_id")
        .annotate(b=Sum("output_bytes"))
    ):
        jobs[pk].totals.stored_bytes += size or 0

    # Clusters, by cluster and by day: the month's node-hours and cost come from them.
    clusters = []
    for cluster in usage.clusters_overlapping(start, end).filter(owner=user).order_by("pk"):
        span = usage.cluster_span(cluster, now)
        if span is None:
            continue
        hours = cluster.nodes * usage.overlap_hours(span, start, end)
        clusters.append(ClusterRow(cluster, hours, hours * cluster.price))
        for d in days:
            day_start = datetime(d.year, d.month, d.day, tzinfo=UTC)
            share = usage.overlap_hours(span, day_start, day_start + timedelta(days=1))
            by_day[d]["node_hours"] += cluster.nodes * share

    job_rows = [row for row in jobs.values() if row.totals.runs or row.totals.stored_bytes]
    for row in job_rows:
        totals.runs += row.totals.runs
        totals.cpu_hours += row.totals.cpu_hours
        totals.wall_hours += row.totals.wall_hours
        totals.stored_bytes += row.totals.stored_bytes
    totals.node_hours = sum(c.node_hours for c in clusters)
    totals.cost = sum(c.cost for c in clusters)
    chart = [
        {
            "day": d.isoformat(),
            "runs": v["runs"],
            "cpu_hours": round(v["cpu_hours"], 4),
            "node_hours": round(v["node_hours"], 4),
        }
        for d, v in by_day.items()
    ]
    budgets = usage.budget_statuses(user.pk, limits_for(user), start, now)
    return MonthReport(start, totals, job_rows, clusters, chart, budgets)


@dataclass
class UserRow:
    """One user's line in the staff table."""

    user: User
    totals: Totals
    budgets: list[BudgetStatus]


def all_users(start: datetime, now: datetime | None = None) -> list[UserRow]:
    """Every user with runs or clusters in the month starting at ``start``, or bytes
    stored, with their totals and budgets; most node-hours first. A handful of queries,
    whatever the number of users."""
    from django.contrib.auth import get_user_model

    now = now or timezone.now()
    end = usage.next_month(start)
    totals: dict[int, Totals] = defaultdict(Totals)
    for row in (
        _runs(start, end)
        .values("job__owner_id")
        .annotate(
            n=Count("pk"),
            cpu=Sum("cpu_seconds"),
            wall=Sum("wall_seconds"),
        )
    ):
        t = totals[row["job__owner_id"]]
        t.runs, t.cpu_hours, t.wall_hours = (
            row["n"],
            (row["cpu"] or 0) / 3600,
            (row["wall"] or 0) / 3600,
        )
    for cluster in usage.clusters_overlapping(start, end):
        span = usage.cluster_span(cluster, now)
        if span is None:
            continue
        hours = cluster.nodes * usage.overlap_hours(span, start, end)
        totals[cluster.owner_id].node_hours += hours
        totals[cluster.owner_id].cost += hours * cluster.price
    for owner_id, size in stored_bytes_by_owner().items():
        totals[owner_id].stored_bytes = size
    users = get_user_model().objects.in_bulk(list(totals))
    limits = limits_by_owner(set(users))
    rows = []
    for pk, t in totals.items():
        if pk not in users:
            continue
        limit = limits[pk]
        budgets = []
        if limit.monthly_node_hours:
            budgets.append(
                BudgetStatus(usage.Budget.NODE_HOURS, t.node_hours, limit.monthly_node_hours)
            )
        if limit.monthly_cost:
            budgets.append(BudgetStatus(usage.Budget.COST, t.cost, limit.monthly_cost))
        rows.append(UserRow(users[pk], t, budgets))
    return sorted(rows, key=lambda r: (-r.totals.node_hours, -r.totals.runs, r.user.pk))
