"""Usage accounting and budgets: what each run used, what each user's clusters used and
have committed this month, the check that refuses a launch or a run past a budget, and
the e-mail at BUDGET_WARNING_PERCENT of a budget.

Units: run times in seconds, cluster use in node-hours (nodes × hours, ``Cluster.nodes``),
cost in the currency of CLUSTER_PRICE_PER_NODE_HOUR (each cluster at the price of its
launch), months are UTC calendar months. A cluster's node-hours count in the month (and
the day) they were spent: one that runs across midnight at the end of a month is split.

Budgets are over clusters only, launched by hand or started for a run alike (the cluster
rows are the one source: ``Run.node_hours`` repeats a run's share for the usage page and
is never added to them). A run on the embedded local Spark uses no node-hours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from clusters.models import Cluster
from quotas.limits import LimitExceeded, Limits, limits_for
from quotas.models import BudgetNotice

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from jobs.models import Job
    from jobs.services.attempt import Attempt

log = logging.getLogger(__name__)

Budget = BudgetNotice.Budget


# --- Months and clusters' hours --------------------------------------------------------------


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the calendar month of ``moment``."""
    utc = moment.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    """The first instant of the month after the one starting at ``start``."""
    return month_start(start + timedelta(days=32))


def previous_month(start: datetime) -> datetime:
    """The first instant of the month before the one starting at ``start``."""
    return month_start(start - timedelta(days=1))


def cluster_span(
    cluster: Cluster, now: datetime, committed: bool = False
) -> tuple[datetime, datetime] | None:
    """The interval (UTC) whose node-hours ``cluster`` uses: from its start to its end, or
    to ``now`` while it lives (``Cluster.node_hours``'s rule); None if it never started.

    With ``committed``, a live cluster counts until its expiry (which it may reach: its
    owner asked for that lifetime), and one not started yet from its creation."""
    start = cluster.started_at
    if committed and cluster.is_live:
        start = start or cluster.created_at
        return start, max(cluster.expires_at, now)
    if start is None:
        return None
    return start, cluster.terminated_at or now


def overlap_hours(span: tuple[datetime, datetime], start: datetime, end: datetime) -> float:
    """Hours of ``span`` that fall in [``start``, ``end``)."""
    seconds = (min(span[1], end) - max(span[0], start)).total_seconds()
    return max(0.0, seconds) / 3600


def clusters_overlapping(start: datetime, end: datetime) -> QuerySet[Cluster]:
    """Clusters that may have used node-hours in [``start``, ``end``): made before its end
    and not ended before its start."""
    return Cluster.objects.filter(created_at__lt=end).filter(
        Q(terminated_at__isnull=True) | Q(terminated_at__gte=start)
    )


@dataclass(frozen=True)
class Spend:
    """Node-hours and their estimated cost."""

    node_hours: float = 0.0
    cost: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.node_hours + other.node_hours, self.cost + other.cost)


def month_spend(
    user_id: int, start: datetime, now: datetime | None = None, committed: bool = False
) -> Spend:
    """What user ``user_id``'s clusters used in the month starting at ``start`` (so far),
    or with ``committed`` what they used plus the rest of the live ones' lifetimes that
    falls in the month (see ``cluster_span``)."""
    now = now or timezone.now()
    end = next_month(start)
    total = Spend()
    for cluster in clusters_overlapping(start, end).filter(owner_id=user_id):
        span = cluster_span(cluster, now, committed)
        if span is None:
            continue
        hours = cluster.nodes * overlap_hours(span, start, end)
        total += Spend(hours, hours * cluster.price)
    return total


# --- Budgets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetStatus:
    """One budget of a user for one month: ``used`` of ``limit``, in node-hours (budget
    ``node_hours``) or money (``cost``)."""

    budget: str
    used: float
    limit: float

    @property
    def percent(self) -> int:
        """Share of the budget used, in whole percent (may pass 100)."""
        return int(100 * self.used / self.limit) if self.limit else 0

    @property
    def label(self) -> str:
        return Budget(self.budget).label


def budget_statuses(
    user_id: int, limits: Limits, start: datetime, now: datetime | None = None
) -> list[BudgetStatus]:
    """The budgets ``limits`` give user ``user_id``, with what was used of them in the month
    starting at ``start``; empty when the user has no budget."""
    budgets = [
        (Budget.NODE_HOURS, limits.monthly_node_hours),
        (Budget.COST, limits.monthly_cost),
    ]
    if not any(limit for _, limit in budgets):
        return []
    spend = month_spend(user_id, start, now)
    used = {Budget.NODE_HOURS: spend.node_hours, Budget.COST: spend.cost}
    return [BudgetStatus(name, used[name], limit) for name, limit in budgets if limit]


def check_budget(user: User, node_hours: float, now: datetime | None = None) -> None:
    """Raise LimitExceeded if ``node_hours`` more of ``user``'s clusters (at today's price)
    would pass one of their monthly budgets.

    The rule: what the user's clusters used this month, plus the rest of the lifetimes of
    their live clusters up to their expiry (this month's part), plus ``node_hours``, must
    stay within the node-hours budget; the same in money (each cluster at its own price)
    within the cost budget. Callers pass nodes × the lifetime asked for (a launch, a run's
    cluster) or × the hours added (an extension); the whole of it counts in this month.
    Counting live clusters to their expiry keeps several launches in a row from passing
    the budget together. Staff have no budget unless an administrator set one.

    Two launches at the same moment could both pass the check: callers hold a lock on the
    user's row (``quotas.limits.lock_user``) from the check to their write.
    """
    limits = limits_for(user)
    if not (limits.monthly_node_hours or limits.monthly_cost):
        return
    now = now or timezone.now()
    committed = month_spend(user.pk, month_start(now), now, committed=True)
    price = settings.CLUSTER_PRICE_PER_NODE_HOUR
    if limits.monthly_node_hours and committed.node_hours + node_hours > limits.monthly_node_hours:
        raise LimitExceeded(
            f"This needs about {node_hours:.1f} node-hours, and your clusters have used or "
            f"reserved {committed.node_hours:.1f} of your {limits.monthly_node_hours:g} "
            "node-hours this month. Choose fewer workers or a shorter lifetime, terminate a "
            "cluster you no longer need, or ask an administrator for a larger budget."
        )
    cost = node_hours * price
    if limits.monthly_cost and committed.cost + cost > limits.monthly_cost:
        raise LimitExceeded(
            f"This would cost about {cost:.2f}, and your clusters have used or reserved "
            f"{committed.cost:.2f} of your monthly budget of {limits.monthly_cost:.2f}. "
            "Choose fewer workers or a shorter lifetime, terminate a cluster you no longer "
            "need, or ask an administrator for a larger budget."
        )


def run_cluster_node_hours(job: Job) -> float:
    """Node-hours the cluster of one run of ``job`` is launched for (``Cluster.nodes`` ×
    its lifetime, ``clusters.services.run_cluster_hours``); 0 for a job that starts no
    cluster of its own."""
    from clusters.services import run_cluster_hours
    from jobs.models import Job

    backend = {
        Job.SparkTarget.NEW_CLUSTER: Cluster.Backend.LOCAL,
        Job.SparkTarget.EMR_CLUSTER: Cluster.Backend.EMR,
    }.get(Job.SparkTarget(job.spark_target))
    if backend is None:
        return 0.0
    hours = run_cluster_hours(job.timeout_seconds, backend)
    return float(Cluster.nodes_for(backend, job.cluster_size) * hours)


def check_run_budget(job: Job) -> None:
    """Raise LimitExceeded if a run of ``job`` would start a cluster that passes its owner's
    budget (``check_budget``); nothing for jobs on the embedded Spark or a running cluster.
    The run's worker checks again when it launches the cluster."""
    node_hours = run_cluster_node_hours(job)
    if node_hours:
        check_budget(job.owner, node_hours)


# --- Runs ------------------------------------------------------------------------------------


def record_run_usage(attempt: Attempt, now: datetime | None = None) -> None:
    """Add what one attempt of a run used to the run's row; call it once per attempt, after
    the attempt's Spark target was released.

    - ``wall_seconds`` += seconds from the attempt's claim (``run.started_at``) to ``now``:
      the sum over the run's attempts.
    - ``cpu_seconds`` += the CPU time of the attempt's sandbox (``attempt.cpu_seconds``,
      from its cgroup), left as it is where the host gave no figure (no cgroup, EMR):
      never invented.
    - ``node_hours`` += the node-hours of the cluster started for the attempt (released,
      so final for a local cluster; an EMR cluster ends itself after its step, and counts
      up to now).

    Additions are single UPDATEs (``F()``), so they hold against concurrent writers. A
    run that used a cluster of its own then has its owner's budgets checked for the 80%
    e-mail (``warn_budgets``). Never raises: an error is logged, and the run goes on to
    its outcome without its figures.
    """
    try:
        _record_run_usage(attempt, now or timezone.now())
    except Exception:
        log.exception("could not record the usage of run=%s", attempt.run.pk)


def _record_run_usage(attempt: Attempt, now: datetime) -> None:
    from jobs.models import Run

    run = attempt.run
    fields: dict[str, Any] = {}
    if run.started_at is not None:
        wall = max(0.0, (now - run.started_at).total_seconds())
        fields["wall_seconds"] = Coalesce(F("wall_seconds"), 0.0) + wall
    cpu = attempt.cpu_seconds
    if cpu is not None:
        fields["cpu_seconds"] = Coalesce(F("cpu_seconds"), 0.0) + cpu
    target = attempt.target
    cluster = target.cluster if target is not None and target.owned else None
    if cluster is not None:
        cluster = Cluster.objects.get(pk=cluster.pk)
        fields["node_hours"] = Coalesce(F("node_hours"), 0.0) + cluster.node_hours
    if fields:
        Run.objects.filter(pk=run.pk).update(**fields)
    log.info(
        "usage run=%s attempt=%s cpu=%s node_hours=%s",
        run.pk,
        run.attempt,
        cpu,
        cluster.node_hours if cluster else None,
    )
    if cluster is not None:
        warn_budgets(run.job.owner_id, now)


# --- The 80% e-mail ----------------------------------------------------------------------------


def warn_budgets(user_id: int, now: datetime | None = None) -> list[str]:
    """Enqueue, after commit, the budget warning (``send_budget_warning``) of each of user
    ``user_id``'s budgets used at BUDGET_WARNING_PERCENT or more this month and not warned
    of yet; returns the budgets enqueued (the task sends once, whatever is enqueued)."""
    from django.contrib.auth import get_user_model

    from quotas.tasks import send_budget_warning

    now = now or timezone.now()
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return []
    start = month_start(now)
    sent = set(
        BudgetNotice.objects.filter(user_id=user_id, month=start.date()).values_list(
            "budget", flat=True
        )
    )
    due = [
        status.budget
        for status in budget_statuses(user_id, limits_for(user), start, now)
        if status.percent >= settings.BUDGET_WARNING_PERCENT and status.budget not in sent
    ]
    for budget in due:
        send_budget_warning.delay_on_commit(user_id, budget)
    return due


def warn_all_budgets(now: datetime | None = None) -> int:
    """``warn_budgets`` for every user whose clusters used node-hours this month (the
    periodic pass that catches clusters launched by hand); returns the warnings enqueued."""
    now = now or timezone.now()
    start = month_start(now)
    owners = set(
        clusters_overlapping(start, next_month(start))
        .filter(started_at__isnull=False)
        .values_list("owner_id", flat=True)
    )
    return sum(len(warn_budgets(owner, now)) for owner in sorted(owners))


def send_budget_warning(user_id: int, budget: str, now: datetime | None = None) -> bool:
    """E-mail user ``user_id`` that they used BUDGET_WARNING_PERCENT or more of ``budget``
    this month, at most once per user, month and budget (BudgetNotice's unique
    constraint). Returns True if a message was sent.

    The notice is written and the message sent in one transaction: a failed send (OSError,
    e.g. SMTP) raises and leaves no notice, for the task's retry; a concurrent second
    call waits on the first's insert and then finds the notice. (A crash between the SMTP
    hand-off and the commit would send it again: we accept that over losing a warning.)
    """
    from django.contrib.auth import get_user_model

    from portal.mail import send_templated

    now = now or timezone.now()
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not user.email:
        return False
    start = month_start(now)
    status = next(
        (s for s in budget_statuses(user_id, limits_for(user), start, now) if s.budget == budget),
        None,
    )
    if status is None or status.percent < settings.BUDGET_WARNING_PERCENT:
        return False
    try:
        with transaction.atomic():
            BudgetNotice.objects.create(
                user=user, month=start.date(), budget=budget, percent=min(status.percent, 999)
            )
            context = {
                "user": user,
                "status": status,
                "month": start,
                "threshold": settings.BUDGET_WARNING_PERCENT,
                "url": settings.PORTAL_ORIGIN + reverse("usage"),
            }
            send_templated("quotas/emails/budget_warning", context, [user.email])
    except IntegrityError:
        return False  # sent already this month
    log.info("budget warning user=%s budget=%s percent=%s", user_id, budget, status.percent)
    return True
