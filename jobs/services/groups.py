"""Backfills and parameter sweeps: many runs of one job, started together as a
``RunGroup`` and run at most ``max_concurrent`` at a time.

- **Backfill** (``create_backfill``): one run per schedule slot of the job in a time
  range given in the job's time zone, each with the slot as its logical date. A slot that
  already has a run is skipped, or, by choice, gets a *backfill re-run*: a new run whose
  ``logical_at`` is the slot, while the slot's own run (unique per job and slot) stays as
  it was. Backfill runs do not count as "active" for the overlap policy of the job's
  regular slots (``dispatch``).
- **Sweep** (``create_sweep``): one run per combination of values of one or more
  parameters, as a grid (every combination) or zipped (the i-th values together).

All of a group's runs are created at once, in one transaction, with bulk inserts. Those
beyond the group's limit wait (``Run.waits_for_group``): no queue message, no claim, and
they do not count against their owner's limit of queued runs. When a run ends,
``fairshare.release_held`` lets the group move its next runs up to its limit, and then the
owner's own concurrency limit applies as to any run.

``progress`` summarises a group by its *items* (a slot, a combination): the newest run of
each, so that "Retry failed" (``retry_failed``) replaces a failure rather than adding to
the count.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import schedule
from jobs.models import Job, Run, RunEvent, RunGroup
from jobs.services import fairshare
from jobs.services.recovery import cancel_run
from quotas import limits, usage

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

State = Run.State


class GroupError(ValueError):
    """A backfill or sweep that cannot be started as asked: the message says why."""


# --- Planning ---------------------------------------------------------------------------------


def local_to_utc(value: datetime, tz_name: str) -> datetime:
    """``value`` as UTC: a naive value is a wall time in ``tz_name``; an aware one is kept.
    A wall time that does not exist or occurs twice (a DST change) takes its first
    meaning (``fold=0``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz_name))
    return value.astimezone(UTC)


def backfill_slots(job: Job, start: datetime, end: datetime) -> list[datetime]:
    """The job's schedule slots ``s`` with ``start <= s <= end`` (UTC), oldest first.

    Raises GroupError for a job without a schedule, an empty or reversed range, and a
    range of more than BACKFILL_MAX_SLOTS slots."""
    if not job.cron:
        raise GroupError("This job has no schedule: a backfill runs its schedule's slots.")
    if end < start:
        raise GroupError("The range ends before it starts.")
    cap = settings.BACKFILL_MAX_SLOTS
    slots = schedule.slots_between(
        job.cron, job.timezone, start - timedelta(microseconds=1), end, cap + 1
    )
    if len(slots) > cap:
        raise GroupError(f"The range has more than {cap} slots: choose a shorter one.")
    if not slots:
        raise GroupError("The range holds no slot of the job's schedule.")
    return slots


def sweep_combinations(axes: dict[str, list], combine: str) -> list[dict[str, Any]]:
    """The parameter values of each run of a sweep over ``axes`` (name -> list of
    values): every combination for "grid" (in the order of ``axes``), the i-th values
    together for "zip". Raises GroupError for no axis, an empty list, lists of different
    lengths when zipped, or more than SWEEP_MAX_RUNS combinations."""
    if not axes:
        raise GroupError("Give at least one parameter and its values.")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GroupError(f"Give {name} at least one value.")
    names = list(axes)
    if combine == RunGroup.Combine.ZIP:
        lengths = {len(v) for v in axes.values()}
        if len(lengths) > 1:
            raise GroupError("Zipped parameters need lists of the same length.")
        rows = list(zip(*axes.values(), strict=True))
    elif combine == RunGroup.Combine.GRID:
        count = 1
        for values in axes.values():
            count *= len(values)
        if count > settings.SWEEP_MAX_RUNS:
            raise GroupError(
                f"The grid has {count} combinations; a sweep runs at most "
                f"{settings.SWEEP_MAX_RUNS}."
            )
        rows = list(itertools.product(*axes.values()))
    else:
        raise GroupError(f"Unknown way to combine values: {combine!r}.")
    if len(rows) > settings.SWEEP_MAX_RUNS:
        raise GroupError(f"A sweep runs at most {settings.SWEEP_MAX_RUNS} combinations.")
    return [dict(zip(names, row, strict=True)) for row in rows]


def _check_concurrency(max_concurrent: int) -> None:
    if not 1 <= max_concurrent <= settings.GROUP_MAX_CONCURRENT:
        raise GroupError(f"Run between 1 and {settings.GROUP_MAX_CONCURRENT} runs at a time.")


# --- Creating -----------------------------------------------------------------------------------


def _insert_waiting(runs: list[Run], group: RunGroup, now: datetime, message: str) -> None:
    """Insert the unsaved QUEUED ``runs`` of the saved ``group``, all waiting for room in
    it, each with a first event saying ``message``, then let the group release its first
    ones (``fairshare.release_held``). Call inside a transaction that holds the owner's
    lock."""
    reason = (
        f"Waiting: the {group.get_kind_display().lower()} runs {group.max_concurrent} at a time."
    )
    for run in runs:
        run.group = group
        run.waits_for_group = True
        run.held_since = now
        run.state_reason = reason
    Run.objects.bulk_create(runs)
    RunEvent.objects.bulk_create(
        RunEvent(run=run, attempt=0, state=run.state, message=message) for run in runs
    )
    fairshare.release_held(group.job.owner_id, now)


def _start(job: Job, user: User | None, runs: list[Run], group: RunGroup, now: datetime) -> None:
    """Save ``group`` and insert its ``runs`` (``_insert_waiting``)."""
    group.save()
    _insert_waiting(runs, group, now, f"Created ({group.get_kind_display()}).")
    log.info(
        "%s group=%s job=%s runs=%s user=%s",
        group.kind,
        group.pk,
        job.pk,
        len(runs),
        getattr(user, "pk", None),
    )


def _check_start(job: Job, user: User | None, max_concurrent: int) -> None:
    """The checks every group passes before it is created: concurrency in range, the
    user's rate, the budget, and room for its first runs among the owner's queued runs.
    Locks the owner's row. Raises GroupError or LimitExceeded."""
    _check_concurrency(max_concurrent)
    if user is not None:
        limits.throttle(user, "run_now")
    usage.check_run_budget(job)
    limits.lock_user(job.owner_id)
    limits.check_active_runs(job.owner, adding=1)


def create_backfill(
    job: Job,
    user: User | None,
    start: datetime,
    end: datetime,
    *,
    parameters: dict | None = None,
    max_concurrent: int = 2,
    rerun_existing: bool = False,
) -> RunGroup:
    """Start a backfill of ``job`` over ``start``..``end`` (wall times in the job's time
    zone when naive; both ends included), one run per slot (``backfill_slots``), with the
    job's parameters overridden by ``parameters``, at most ``max_concurrent`` at a time.

    Slots with a run are skipped (counted in ``skipped_slots``), or with
    ``rerun_existing`` get a backfill re-run. Raises GroupError (the range, the
    concurrency, nothing to run), notebooks.ParameterError for values that do not fit, and
    LimitExceeded past the user's rate, budget or queued runs."""
    start_utc, end_utc = local_to_utc(start, job.timezone), local_to_utc(end, job.timezone)
    slots = backfill_slots(job, start_utc, end_utc)
    version = job.latest_version()
    values = dict(job.parameters or {})
    overrides = version.coerce_parameters(parameters or {})
    values.update(overrides)
    now = timezone.now()
    with transaction.atomic():
        _check_start(job, user, max_concurrent)
        # The job's row: the dispatcher locks it too, so no slot gets a run meanwhile.
        Job.objects.select_for_update().filter(pk=job.pk).first()
        taken = set(
            Run.objects.filter(
                job=job, scheduled_for__gte=slots[0], scheduled_for__lte=slots[-1]
            ).values_list("scheduled_for", flat=True)
        )
        runs = []
        for slot in slots:
            rerun = slot in taken
            if rerun and not rerun_existing:
                continue
            run = Run.build(
                job,
                trigger=Run.Trigger.BACKFILL_RERUN if rerun else Run.Trigger.BACKFILL,
                version_id=version.pk,
                parameters=values,
                now=now,
                scheduled_for=None if rerun else slot,
                created_by=user,
            )
            run.logical_at = slot if rerun else None
            runs.append(run)
        if not runs:
            raise GroupError("Every slot of the range already has a run: nothing to backfill.")
        group = RunGroup(
            job=job,
            kind=RunGroup.Kind.BACKFILL,
            created_by=user,
            max_concurrent=max_concurrent,
            parameters=overrides,
            range_start=start_utc,
            range_end=end_utc,
            rerun_existing=rerun_existing,
            skipped_slots=len(slots) - len(runs),
        )
        _start(job, user, runs, group, now)
    return group


def create_sweep(
    job: Job,
    user: User | None,
    axes: dict[str, list],
    *,
    combine: str = RunGroup.Combine.GRID,
    max_concurrent: int = 2,
) -> RunGroup:
    """Start a sweep of ``job``: one run per combination of ``axes`` (parameter name ->
    list of values, ``sweep_combinations``), each with the job's parameters overridden by
    its combination, at most ``max_concurrent`` at a time. Raises GroupError,
    notebooks.ParameterError (every combination is checked against the notebook's
    parameters) and LimitExceeded."""
    version = job.latest_version()
    clean_axes = {
        name: [version.coerce_parameters({name: v})[name] for v in values]
        for name, values in axes.items()
    }
    combinations = sweep_combinations(clean_axes, combine)
    now = timezone.now()
    with transaction.atomic():
        _check_start(job, user, max_concurrent)
        runs = [
            Run.build(
                job,
                trigger=Run.Trigger.SWEEP,
                version_id=version.pk,
                parameters={**(job.parameters or {}), **combination},
                now=now,
                created_by=user,
            )
            for combination in combinations
        ]
        group = RunGroup(
            job=job,
            kind=RunGroup.Kind.SWEEP,
            created_by=user,
            max_concurrent=max_concurrent,
            parameters=clean_axes,
            combine=combine,
        )
        _start(job, user, runs, group, now)
    return group


# --- Acting on a group ------------------------------------------------------------------------


def _item_key(group: RunGroup, run: Run) -> str:
    """What a run of ``group`` is for: its slot (backfill) or its swept values (sweep)."""
    if group.kind == RunGroup.Kind.BACKFILL:
        return run.logical_date.isoformat()
    return json.dumps({name: run.parameters.get(name) for name in group.parameters}, sort_keys=True)


def latest_runs(group: RunGroup) -> list[Run]:
    """The newest run of each item of ``group`` (its slot, its combination), in item
    order (slot order for a backfill, creation order for a sweep)."""
    newest: dict[str, Run] = {}
    for run in group.runs.order_by("id"):
        newest[_item_key(group, run)] = run
    runs = list(newest.values())
    if group.kind == RunGroup.Kind.BACKFILL:
        runs.sort(key=lambda r: r.logical_date)
    return runs


@dataclass(frozen=True)
class Progress:
    """Counts of a group's items by the state of their newest run."""

    total: int
    succeeded: int
    failed: int
    running: int
    queued: int
    cancelled: int

    @property
    def done(self) -> int:
        """Items whose newest run has ended, however."""
        return self.total - self.running - self.queued

    @property
    def active(self) -> bool:
        return bool(self.running or self.queued)


def progress(group: RunGroup, runs: list[Run] | None = None) -> Progress:
    """``group``'s progress over ``runs`` (default: ``latest_runs``)."""
    runs = latest_runs(group) if runs is None else runs
    states = Counter(run.state for run in runs)
    return Progress(
        total=len(runs),
        succeeded=states[State.SUCCEEDED],
        failed=sum(states[s] for s in Run.FAILURE_STATES),
        running=states[State.RUNNING],
        queued=states[State.QUEUED],
        cancelled=states[State.CANCELLED] + states[State.SKIPPED],
    )


def cancel_group(group: RunGroup, user: User | None = None) -> int:
    """Cancel every active run of ``group``: those still waiting for the group at once (in
    bulk), the others as ``cancel_run`` does (a running one stops within a heartbeat).
    Returns how many runs were cancelled or asked to stop."""
    now = timezone.now()
    reason = f"Cancelled with its {group.get_kind_display().lower()}."
    with transaction.atomic():
        limits.lock_user(group.job.owner_id)
        waiting = list(
            Run.objects.filter(group=group, state=State.QUEUED, waits_for_group=True).values_list(
                "pk", "attempt"
            )
        )
        Run.objects.filter(pk__in=[pk for pk, _ in waiting]).update(
            state=State.CANCELLED,
            finished_at=now,
            cancel_requested_at=now,
            held_since=None,
            state_reason=reason,
        )
        RunEvent.objects.bulk_create(
            RunEvent(run_id=pk, attempt=attempt, state=State.CANCELLED, message=reason)
            for pk, attempt in waiting
        )
    others = list(Run.objects.filter(group=group, state__in=Run.ACTIVE_STATES))
    for run in others:
        cancel_run(run, user)
    return len(waiting) + len(others)


def retry_failed(group: RunGroup, user: User | None) -> int:
    """Start a new run for each item of ``group`` whose newest run failed, timed out or
    was lost, with the same version and parameters; a backfill's become backfill re-runs
    of their slot. They wait for room in the group like its first runs. Returns how many
    were started (0 when none failed). Raises LimitExceeded like the group's start."""
    failed = [run for run in latest_runs(group) if run.state in Run.FAILURE_STATES]
    if not failed:
        return 0
    job = group.job
    now = timezone.now()
    with transaction.atomic():
        _check_start(job, user, group.max_concurrent)
        runs = []
        for old in failed:
            backfill = group.kind == RunGroup.Kind.BACKFILL
            run = Run.build(
                job,
                trigger=Run.Trigger.BACKFILL_RERUN if backfill else Run.Trigger.SWEEP,
                version_id=old.version_id,
                parameters=dict(old.parameters),
                now=now,
                created_by=user,
            )
            run.logical_at = old.logical_date if backfill else None
            runs.append(run)
        _insert_waiting(runs, group, now, "Created (retry of a failed run of its group).")
    return len(runs)
