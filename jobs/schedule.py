"""Schedule maths: presets to cron, cron validation, the next slots, and wording.

Slots are computed with croniter in the job's IANA time zone, so "daily at 02:30 in
Europe/Berlin" follows the wall clock across DST changes: on the spring-forward day, when
02:30 does not exist, croniter gives 03:00 local time; on the fall-back day the slot runs
once. All datetimes going in and out are aware; results are in UTC.
"""

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cron_descriptor import CasingTypeEnum, Options, get_description
from croniter import CroniterBadDateError, croniter

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


class ScheduleError(ValueError):
    """A cron expression, preset or time zone that cannot be used; the message says why."""


def validate_timezone(name: str) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name; raises ScheduleError for an unknown one."""
    if not name or name not in _timezones():
        raise ScheduleError(
            f"Unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC."
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"Unknown time zone {name!r}.") from None


_TZ_CACHE: set[str] = set()


def _timezones() -> set[str]:
    if not _TZ_CACHE:
        _TZ_CACHE.update(available_timezones())
        _TZ_CACHE.add("UTC")
    return _TZ_CACHE


def timezone_choices() -> list[str]:
    """All IANA time zone names, sorted, UTC first."""
    return ["UTC"] + sorted(n for n in _timezones() if n != "UTC" and "/" in n)


def validate_cron(expr: str) -> str:
    """Return the expression normalised to single spaces; raises ScheduleError if invalid.

    Only the standard 5 fields (minute hour day-of-month month day-of-week) are accepted:
    no seconds field, no ``@reboot``; an expression no date matches (``0 0 30 2 *``) is
    refused too.
    """
    fields = (expr or "").split()
    if len(fields) != 5:
        raise ScheduleError(
            "A cron expression has 5 fields (minute hour day month weekday); "
            f"{expr!r} has {len(fields)}."
        )
    normalised = " ".join(fields)
    if not croniter.is_valid(normalised):
        raise ScheduleError(f"{expr!r} is not a valid cron expression.")
    next_slot_after(normalised, "UTC", datetime(2000, 1, 1, tzinfo=UTC))  # raises if it never fires
    return normalised


def preset_to_cron(
    kind: str, minute: int = 0, hour: int = 0, weekday: int = 0, day: int = 1
) -> str:
    """Build the cron expression of a preset.

    ``kind`` is one of hourly, daily, weekly, monthly; ``minute`` 0-59, ``hour`` 0-23,
    ``weekday`` 0 (Monday) to 6 (Sunday), ``day`` of the month 1-31 (months without that
    day are skipped, as cron does). Raises ScheduleError on out-of-range values.
    """
    if not 0 <= minute <= 59 or not 0 <= hour <= 23:
        raise ScheduleError("The time must be between 00:00 and 23:59.")
    if kind == "hourly":
        return f"{minute} * * * *"
    if kind == "daily":
        return f"{minute} {hour} * * *"
    if kind == "weekly":
        if not 0 <= weekday <= 6:
            raise ScheduleError("Pick a weekday.")
        return f"{minute} {hour} * * {(weekday + 1) % 7}"  # cron: 0 = Sunday
    if kind == "monthly":
        if not 1 <= day <= 31:
            raise ScheduleError("The day of the month must be between 1 and 31.")
        return f"{minute} {hour} {day} * *"
    raise ScheduleError(f"Unknown schedule preset {kind!r}.")


def cron_to_preset(expr: str) -> dict:
    """Best-effort inverse of ``preset_to_cron``, used to prefill the edit form.

    Returns ``{"kind": ..., "minute": m, "hour": h, "weekday": w, "day": d}``; kind is
    "cron" when the expression is not one of the presets.
    """
    out = {"kind": "cron", "minute": 0, "hour": 0, "weekday": 0, "day": 1}
    fields = expr.split()
    if len(fields) != 5 or not all(f.isdigit() or f == "*" for f in fields):
        return out
    m, h, dom, mon, dow = fields
    if mon != "*" or not m.isdigit():
        return out
    out["minute"] = int(m)
    if h == "*" and dom == "*" and dow == "*":
        out["kind"] = "hourly"
    elif h.isdigit() and dom == "*" and dow == "*":
        out.update(kind="daily", hour=int(h))
    elif h.isdigit() and dom == "*" and dow.isdigit() and int(dow) <= 7:
        out.update(kind="weekly", hour=int(h), weekday=(int(dow) - 1) % 7)
    elif h.isdigit() and dom.isdigit() and dow == "*":
        out.update(kind="monthly", hour=int(h), day=int(dom))
    return out


def _slots(expr: str, tz_name: str, moment: datetime):
    """Yield the slots strictly after ``moment``, in UTC, forever. Raises ScheduleError
    when croniter finds no matching date (an expression that never fires).

    When clocks go back, croniter yields a wall-clock time of the repeated hour twice. As
    Vixie cron does (cron(8): "jobs that fall into the repeated time will not be
    re-executed", while jobs with a wildcard hour keep their interval), the second
    occurrence (``fold=1``) is dropped unless the hour field is a wildcard.
    """
    tz = ZoneInfo(tz_name)
    hour_wildcard = expr.split()[1].startswith("*")
    it = croniter(expr, moment.astimezone(tz))
    while True:
        try:
            slot = it.get_next(datetime)
        except CroniterBadDateError:
            raise ScheduleError(
                f"{expr!r} never fires: no date matches it (like 30 February or 31 April)."
            ) from None
        if slot.astimezone(tz).fold == 1 and not hour_wildcard:
            continue
        yield slot.astimezone(UTC)


def next_slot_after(expr: str, tz_name: str, moment: datetime) -> datetime:
    """The first slot of ``expr`` in zone ``tz_name`` strictly after ``moment``, in UTC.

    Memoised: a dispatcher pass asks it for every due job with the same ``moment``, and
    jobs due together mostly share their cron expression and zone. ``moment`` is keyed in
    UTC: two local times that differ only in ``fold`` are different instants.
    """
    return _next_slot_after(expr, tz_name, moment.astimezone(UTC))


@lru_cache(maxsize=1024)
def _next_slot_after(expr: str, tz_name: str, moment: datetime) -> datetime:
    return next(_slots(expr, tz_name, moment))


def upcoming_slots(expr: str, tz_name: str, moment: datetime, count: int) -> list[datetime]:
    """The next ``count`` slots strictly after ``moment``, aware, in UTC."""
    slots = _slots(expr, tz_name, moment)
    return [next(slots) for _ in range(count)]


def slots_between(
    expr: str, tz_name: str, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """Slots ``s`` with ``after < s <= until``, oldest first, at most the newest ``limit``."""
    return list(_slots_between(expr, tz_name, after.astimezone(UTC), until.astimezone(UTC), limit))


@lru_cache(maxsize=1024)
def _slots_between(
    expr: str, tz_name: str, after: datetime, until: datetime, limit: int
) -> tuple[datetime, ...]:
    found: list[datetime] = []
    for slot in _slots(expr, tz_name, after):
        if slot > until:
            return tuple(found)
        found.append(slot)
        if len(found) > limit:
            found.pop(0)
    return tuple(found)  # not reached: a validated cron expression has endless slots


def shortest_interval(expr: str, tz_name: str, below: float, samples: int = 1500) -> float:
    """The shortest time (seconds) between two consecutive slots of ``expr`` in zone
    ``tz_name``, among its first ``samples`` slots after 2001-01-01 (a Monday, so weekday
    fields line up from the start), or over two years of slots when those end sooner.

    Stops at the first gap shorter than ``below`` (seconds) and returns it: callers only ask
    whether a schedule runs more often than a minimum. Cron patterns repeat at least
    yearly, so the sample finds the shortest gap of every expression a person writes (e.g.
    "*/5 0 * * *": 300 s, on the first day). Raises ScheduleError like ``upcoming_slots``.
    """
    start = datetime(2001, 1, 1, tzinfo=UTC)
    horizon = start.replace(year=2003)
    shortest = float("inf")
    previous = None
    for index, slot in enumerate(_slots(expr, tz_name, start)):
        if previous is not None:
            shortest = min(shortest, (slot - previous).total_seconds())
            if shortest < below:
                break
        if index >= samples or slot > horizon:
            break
        previous = slot
    return shortest


def describe(expr: str, tz_name: str) -> str:
    """The schedule in words, e.g. "At 06:00, only on Monday (Europe/Berlin)"."""
    options = Options()
    options.use_24hour_time_format = True
    options.casing_type = CasingTypeEnum.Sentence
    options.verbose = False
    try:
        words = get_description(expr, options)
    except Exception:  # cron-descriptor raises several types; the cron itself was validated
        words = expr
    return f"{words} ({tz_name})"
