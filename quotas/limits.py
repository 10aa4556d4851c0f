"""Per-user limits: what applies to a user (settings, overridden per user in the admin),
and the checks the services run before they create a job, queue a run or repeat an action.

Every check raises ``LimitExceeded`` with a message for the person who hit it; pages show
it as a form error or a message, never a 500. Checks live here and are called by the
services (``jobs.services``, ``clusters.services``), so pages, ``manage.py`` commands and
any other client obey the same rules.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django_ratelimit.core import get_usage

from jobs import schedule
from quotas.models import UserLimits

if TYPE_CHECKING:
    from django.contrib.auth.models import User as AnyUser


class LimitExceeded(Exception):
    """A request refused by a fair-share limit. ``message`` says which limit and what to do;
    ``field`` names the form field at fault, if one is ("cron"), else None; ``code`` is
    "rate_limited" for a rate (the API answers 429) or "limit_exceeded" (403)."""

    def __init__(
        self, message: str, field: str | None = None, code: str = "limit_exceeded"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one user; None means "no limit".

    ``min_schedule_interval`` is in seconds; ``rates`` maps each action of RATE_LIMITS to
    a django-ratelimit rate ("COUNT/PERIOD") or None.
    """

    max_jobs: int | None = None
    max_active_runs: int | None = None
    max_running_runs: int | None = None
    min_schedule_interval: int | None = None
    catchup_max_slots: int | None = None
    monthly_node_hours: float | None = None
    monthly_cost: float | None = None
    rates: dict[str, str | None] = field(default_factory=dict)


#: Field of UserLimits -> the setting that gives its default.
DEFAULTS = {
    "max_jobs": "USER_MAX_JOBS",
    "max_active_runs": "USER_MAX_ACTIVE_RUNS",
    "max_running_runs": "USER_MAX_RUNNING_RUNS",
    "min_schedule_interval": "USER_MIN_SCHEDULE_INTERVAL",
    "catchup_max_slots": "USER_CATCHUP_MAX_SLOTS",
    "monthly_node_hours": "USER_MONTHLY_NODE_HOURS",
    "monthly_cost": "USER_MONTHLY_COST",
}


def resolve(is_staff: bool, override: UserLimits | None) -> Limits:
    """The limits of a user from their staff flag and their override row (or None).

    Rule: an override's non-empty field wins; otherwise staff have no limit and others have
    the setting's default. A value of 0, from either, means no limit.
    """
    values: dict[str, Any] = {}
    for name, setting in DEFAULTS.items():
        value = getattr(override, name, None) if override is not None else None
        if value is None and not is_staff:
            value = getattr(settings, setting)
        values[name] = value or None
    overridden = override.rates if override is not None else {}
    values["rates"] = {
        action: overridden.get(action) or (None if is_staff else rate) or None
        for action, rate in settings.RATE_LIMITS.items()
    }
    return Limits(**values)


def limits_for(user: "AnyUser") -> Limits:
    """The limits that apply to ``user`` (one query for the override)."""
    override = UserLimits.objects.filter(user_id=user.pk).first()
    return resolve(bool(getattr(user, "is_staff", False)), override)


def limits_by_owner(owner_ids: set[int]) -> dict[int, Limits]:
    """``limits_for`` of many users at once, by user id (two queries)."""
    from django.contrib.auth import get_user_model

    staff = dict(get_user_model().objects.filter(pk__in=owner_ids).values_list("pk", "is_staff"))
    overrides = {row.user_id: row for row in UserLimits.objects.filter(user_id__in=owner_ids)}
    return {pk: resolve(staff.get(pk, False), overrides.get(pk)) for pk in owner_ids}


def lock_user(user_id: int) -> None:
    """Lock the row of user ``user_id`` until the caller's transaction ends (SELECT ... FOR
    UPDATE; SQLite locks the whole database for a write anyway), so that checks counting
    that user's jobs or runs and the writes after them happen one request at a time."""
    from django.contrib.auth import get_user_model

    list(get_user_model().objects.select_for_update().filter(pk=user_id).values_list("pk"))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def check_job_count(user: "AnyUser") -> None:
    """Raise LimitExceeded if ``user`` already owns as many jobs as they may."""
    from jobs.models import Job

    limit = limits_for(user).max_jobs
    if limit is not None and Job.objects.filter(owner_id=user.pk).count() >= limit:
        raise LimitExceeded(
            f"You have reached your limit of {_plural(limit, 'job')}. "
            "Delete a job you no longer need, or ask an administrator for a higher limit."
        )


def check_schedule_interval(user: "AnyUser", cron: str, tz_name: str) -> None:
    """Raise LimitExceeded (field "cron") if the schedule ``cron`` in zone ``tz_name`` runs
    more often than ``user``'s minimum interval allows."""
    minimum = limits_for(user).min_schedule_interval
    if minimum is None or not cron:
        return
    shortest = schedule.shortest_interval(cron, tz_name, below=minimum)
    if shortest < minimum:
        raise LimitExceeded(
            f"This schedule runs every {_duration(shortest)} at times; the shortest interval "
            f"allowed is {_duration(minimum)}.",
            field="cron",
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0:
        return _plural(seconds // 3600, "hour")
    if seconds % 60 == 0:
        return _plural(seconds // 60, "minute")
    return _plural(seconds, "second")


def active_runs(user_id: int) -> int:
    """Runs of ``user_id``'s jobs that are QUEUED or RUNNING, but for runs of a backfill or
    sweep that wait for room in it (its own limit keeps those out of the queue)."""
    from jobs.models import Run

    return Run.objects.filter(
        job__owner_id=user_id, state__in=Run.ACTIVE_STATES, waits_for_group=False
    ).count()


def check_active_runs(user: "AnyUser", adding: int = 1) -> None:
    """Raise LimitExceeded if ``adding`` more queued runs would take ``user`` past their
    limit of queued plus running runs."""
    limit = limits_for(user).max_active_runs
    if limit is None:
        return
    active = active_runs(user.pk)
    if active + adding > limit:
        raise LimitExceeded(
            f"You have {_plural(active, 'run')} queued or running, and your limit is {limit}. "
            "Wait for some to finish, or cancel those you do not need."
        )


def throttle(user: "AnyUser", action: str) -> None:
    """Count one ``action`` (a key of RATE_LIMITS) by ``user`` and raise LimitExceeded when
    it goes past the user's rate. Counted with django-ratelimit in the shared cache (Redis
    in production), so the limit holds across web processes."""
    rate = limits_for(user).rates.get(action)
    if rate is None:
        return
    usage = get_usage(
        None,
        group=f"portal.{action}",
        key=lambda group, request: str(user.pk),
        rate=rate,
        increment=True,
    )
    if usage is not None and usage["should_limit"]:
        wait = max(int(usage["time_left"]), 1)
        raise LimitExceeded(
            f"Too many requests: at most {_rate_words(rate)}. Try again in {_duration(wait)}.",
            code="rate_limited",
        )


def _rate_words(rate: str) -> str:
    count, period = rate.split("/")
    unit = {"s": "second", "m": "minute", "h": "hour", "d": "day"}[period[-1]]
    multiple = period[:-1]
    per = f"{multiple} {unit}s" if multiple and multiple != "1" else unit
    return f"{count} per {per}"
