"""Run creation and dispatch: "Run now", re-runs, and the runs of due schedule slots,
each created in the caller's transaction and sent to the ``runs`` queue after commit.

The database is the source of truth; Celery only delivers ``execute_run(run_id)``
messages, always after the transaction that created the run has committed. A message that
is lost leaves its run QUEUED for the reaper (``recovery.reap_runs``) to send again.
"""

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from jobs import schedule
from jobs.models import Job, NotebookVersion, Run, RunEvent
from jobs.services import fairshare
from quotas import limits, usage
from quotas.limits import LimitExceeded, Limits

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

State = Run.State


def enqueue_run(run: Run, countdown: float = 0) -> None:
    """Send ``execute_run(run.id)`` once the current transaction commits, after
    ``countdown`` seconds."""
    _enqueue_all([run.pk], countdown)


def _enqueue_all(run_ids: list[int], countdown: float = 0) -> None:
    """Send ``execute_run`` for each of ``run_ids`` (``execute_stream_run``, to the
    ``streams`` queue, for a continuous run), in order, through one broker producer, once
    the current transaction commits. A message that cannot be sent leaves its run
    QUEUED: the reaper enqueues it again after RUN_QUEUED_TIMEOUT."""
    from jobs.tasks import execute_run, execute_stream_run  # jobs.tasks imports this package

    def publish() -> None:
        with execute_run.app.producer_or_acquire() as producer:
            for run_id in run_ids:
                # Continuous runs go to the "streams" queue (CELERY_TASK_ROUTES).
                task = execute_stream_run if run_id in continuous else execute_run
                task.apply_async((run_id,), countdown=countdown or None, producer=producer)

    if run_ids:
        continuous = set(
            Run.objects.filter(pk__in=run_ids, trigger=Run.Trigger.CONTINUOUS).values_list(
                "pk", flat=True
            )
        )
        # robust: a broker that is down must not turn a committed request into an error;
        # the runs stay QUEUED and the reaper enqueues them again.
        transaction.on_commit(publish, robust=True)


def _new_run(
    job: Job,
    *,
    trigger: str,
    parameters: dict,
    version: NotebookVersion | None = None,
    scheduled_for: datetime | None = None,
    created_by: "User | None" = None,
    state: str = State.QUEUED,
    reason: str = "",
    enqueue: bool = True,
    held: str = "",
) -> Run:
    """Create a run of ``job`` (``Run.build``) and its first event in the caller's
    transaction, and enqueue it after commit when it is QUEUED and ``enqueue``. A QUEUED
    run with a ``held`` reason is created held instead (``fairshare``): no message."""
    version = version or job.latest_version()
    now = timezone.now()
    run = Run.build(
        job,
        trigger=trigger,
        version_id=version.pk,
        parameters=parameters,
        now=now,
        scheduled_for=scheduled_for,
        created_by=created_by,
        state=state,
        reason=reason,
    )
    _hold_new(run, held, now)
    return _save_new_run(run, enqueue=enqueue)


def _hold_new(run: Run, reason: str, now: datetime) -> None:
    """Make the unsaved QUEUED ``run`` held, saying ``reason`` (nothing when it is "")."""
    if reason and run.state == State.QUEUED:
        run.held_since = now
        run.state_reason = reason


def _save_new_run(run: Run, enqueue: bool = True) -> Run:
    """Insert an unsaved run and its first event in the caller's transaction; enqueue it
    after commit when it is QUEUED and ``enqueue``."""
    run.save()
    RunEvent.objects.create(run=run, attempt=0, state=run.state, message=run.creation_message)
    if run.state == State.QUEUED and enqueue and run.held_since is None:
        enqueue_run(run)
    return run


def run_now(
    job: Job,
    user: "User | None",
    parameters: dict | None = None,
    trigger: str = Run.Trigger.MANUAL,
    enqueue: bool = True,
) -> Run:
    """Start a run of ``job`` at once with its parameters (overridden by ``parameters``).

    Never moves the job's schedule. With ``enqueue=False`` no message is sent: the caller
    executes the run itself (``manage.py runnotebook --inline``). Raises ParameterError
    for values that do not fit, LimitExceeded past ``user``'s rate of "Run now" or the
    owner's limit of queued and running runs, or for a continuous job.
    """
    refuse_continuous(job)
    if user is not None:
        limits.throttle(user, "run_now")
    usage.check_run_budget(job)  # LimitExceeded if its own cluster would pass the budget
    version = job.latest_version()
    values = dict(job.parameters or {})
    if parameters:
        values.update(version.coerce_parameters(parameters))
    with transaction.atomic():
        held = _check_room(job)
        run = _new_run(
            job,
            trigger=trigger,
            parameters=values,
            version=version,
            created_by=user,
            enqueue=enqueue,
            held=held if enqueue else "",  # the caller executes it itself: claim decides
        )
    log.info("run now run=%s job=%s user=%s", run.pk, job.pk, getattr(user, "pk", None))
    return run


def refuse_continuous(job: Job) -> None:
    """Raise LimitExceeded for a continuous job: its one run is the supervisor's
    (``streams``), never started by hand."""
    if job.continuous:
        raise LimitExceeded(
            "A continuous job keeps its one run going by itself: resume the job to start it."
        )


def _check_room(job: Job) -> str:
    """Raise LimitExceeded if ``job``'s owner has as many runs queued or running as they
    may; else return why a new run of theirs must be held (``fairshare.hold_reason``), or
    "" when it may be sent to the queue. Locks the owner's row until the caller's
    transaction ends, so that concurrent requests are counted one after the other."""
    limits.lock_user(job.owner_id)
    limits.check_active_runs(job.owner)
    return fairshare.hold_reason(job.owner_id)


def rerun(run: Run, user: "User") -> Run:
    """Start a new run with the same notebook version and parameters as ``run``. Raises
    LimitExceeded like ``run_now`` (the action counted is "rerun")."""
    refuse_continuous(run.job)
    limits.throttle(user, "rerun")
    with transaction.atomic():
        held = _check_room(run.job)
        new = _new_run(
            run.job,
            trigger=Run.Trigger.RERUN,
            parameters=dict(run.parameters),
            version=run.version,
            created_by=user,
            held=held,
        )
    return new


def dispatch_due_runs(now: datetime | None = None, batch: int = 20) -> list[Run]:
    """Create the runs of every job whose next slot is at or before ``now`` (UTC).

    Jobs are handled in small batches (``batch``), each its own transaction, so the first
    runs are enqueued while later ones are still being created. For each due job: choose
    the slots to run by the job's catch-up policy ("latest": the newest missed slot;
    "all": every missed slot, at most CATCHUP_MAX_SLOTS; "none": only a slot less than
    one dispatch interval old), create
    one Run per slot (QUEUED, or SKIPPED when the overlap policy is "skip" and a run is
    still active), advance ``next_run_at`` past ``now``, and enqueue after commit.

    Safe to call concurrently: due jobs are locked with SKIP LOCKED, and the unique
    constraint on (job, scheduled_for) makes a second run for a slot impossible anyway.

    Per-user limits (``quotas.limits``): "all" runs at most the owner's
    ``catchup_max_slots`` (never more than CATCHUP_MAX_SLOTS), and a slot that would take
    its owner past their limit of queued and running runs is created SKIPPED, saying so.
    Returns the runs created (queued and skipped).
    """
    now = now or timezone.now()
    created: list[Run] = []
    grace = timedelta(seconds=max(settings.DISPATCH_INTERVAL * 2, 5))
    owner_limits: dict[int, Limits] = {}  # for the whole pass: owners recur across batches
    while True:
        with transaction.atomic():
            jobs = list(
                Job.objects.due(now)
                .select_for_update(skip_locked=True)
                .order_by("next_run_at", "id")[:batch]
            )
            if missing := {job.owner_id for job in jobs} - owner_limits.keys():
                owner_limits.update(limits.limits_by_owner(missing))
            plans = {
                job.pk: plan
                for job in jobs
                if (plan := _plan(job, now, grace, owner_limits[job.owner_id])) is not None
            }
            healthy = [job for job in jobs if job.pk in plans]
            try:
                with transaction.atomic():
                    created += _dispatch_batch(healthy, plans, now, owner_limits)
            except IntegrityError:
                # A run for one of the slots appeared meanwhile (a dispatcher without row
                # locks, e.g. on SQLite): fall back to one job, one savepoint at a time.
                for job in healthy:
                    created += _dispatch_job(job, plans[job.pk], owner_limits[job.owner_id])
        if len(jobs) < batch:
            return created


def _slots_to_run(job: Job, now: datetime, grace: timedelta, cap: int) -> list[datetime]:
    """The due slots of ``job`` that its catch-up policy runs, oldest first; "all" runs at
    most the newest ``cap``."""
    first = job.next_run_at
    assert first is not None  # Job.objects.due: a due job has a next slot
    missed = [first] + schedule.slots_between(
        job.cron, job.timezone, first, now, settings.CATCHUP_MAX_SLOTS
    )
    if job.catchup == Job.CatchUp.ALL:
        return missed[-cap:]
    if job.catchup == Job.CatchUp.NONE:
        return [s for s in missed[-1:] if now - s <= grace]
    return missed[-1:]


class _Room:
    """What each owner may still start in a dispatcher pass, counted as the pass creates
    runs: ``counts`` maps an owner id to ``[active, unheld]`` (runs QUEUED or RUNNING; of
    them, those not held)."""

    def __init__(self, counts: dict[int, list[int]], owner_limits: dict[int, Limits]) -> None:
        self.counts = counts
        self.owner_limits = owner_limits

    def refusal(self, owner_id: int) -> str:
        """Why a new run of ``owner_id`` must be SKIPPED (their limit of queued and running
        runs), or "" after counting it in."""
        limit = self.owner_limits[owner_id].max_active_runs
        counts = self.counts.setdefault(owner_id, [0, 0])
        if limit is not None and counts[0] >= limit:
            return (
                f"Skipped: the owner had {counts[0]} runs queued or running, "
                f"their limit is {limit}."
            )
        counts[0] += 1
        return ""

    def hold(self, owner_id: int) -> str:
        """Why the new run of ``owner_id`` just counted in must be held (their concurrency
        limit, ``fairshare``), or "" when it may be sent to the queue."""
        counts = self.counts.setdefault(owner_id, [0, 0])
        limit = self.owner_limits[owner_id].max_running_runs
        if limit is not None and counts[1] >= limit:
            return fairshare.waiting_reason(counts[1], limit, queued=True)
        counts[1] += 1
        return ""


def _active_by_owner(owner_ids: set[int]) -> dict[int, list[int]]:
    """``[active, unheld]`` runs per owner id: QUEUED or RUNNING, and of them those that are
    not held (one query)."""
    rows = (
        Run.objects.filter(
            job__owner_id__in=owner_ids, state__in=Run.ACTIVE_STATES, waits_for_group=False
        )
        .values("job__owner_id")
        .annotate(n=Count("id"), unheld=Count("id", filter=Q(held_since__isnull=True)))
        .values_list("job__owner_id", "n", "unheld")
    )
    return {owner_id: [n, unheld] for owner_id, n, unheld in rows}


def _plan(
    job: Job, now: datetime, grace: timedelta, owner: Limits
) -> tuple[list[datetime], datetime | None] | None:
    """``(slots to run, next slot after now)`` of a due job, or None when its schedule
    cannot be computed (a cron expression or zone that reached the row without the
    portal's validation, e.g. a raw SQL edit, and that croniter or zoneinfo rejects): then
    the job is paused and a FAILED run for its due slot says why, so that one bad row
    never stops the dispatcher for every job behind it."""
    cap = min(settings.CATCHUP_MAX_SLOTS, owner.catchup_max_slots or settings.CATCHUP_MAX_SLOTS)
    try:
        return _slots_to_run(job, now, grace, cap), job.next_slot_after(now)
    except (
        schedule.ScheduleError,
        ValueError,
        KeyError,
    ) as exc:  # croniter's errors are ValueErrors; zoneinfo's KeyErrors
        reason = (
            f"The schedule cannot be computed ({exc}): the job was paused. "
            "Fix its schedule, then resume it."
        )
        log.error("job=%s paused: %s", job.pk, reason)
        slot, version = job.next_run_at, job.latest_version()
        Job.objects.filter(pk=job.pk).update(enabled=False, next_run_at=None)
        if version is not None:
            try:
                with transaction.atomic():
                    _new_run(
                        job,
                        trigger=Run.Trigger.SCHEDULE,
                        parameters=dict(job.parameters),
                        version=version,
                        scheduled_for=slot,
                        state=State.FAILED,
                        reason=reason,
                    )
            except IntegrityError:
                pass  # that slot already has a run
        return None


def _dispatch_batch(
    jobs: list[Job], plans: dict, now: datetime, owner_limits: dict[int, Limits]
) -> list[Run]:
    """Dispatch a batch of locked, due jobs (``plans``: job id -> ``_plan``) with a
    handful of queries in all (latest versions, active runs, existing slots, bulk inserts,
    one bulk update) instead of several per job. Raises IntegrityError if a slot got a
    run meanwhile."""
    ids = [job.pk for job in jobs]
    room = _Room(_active_by_owner({job.owner_id for job in jobs}), owner_limits)
    latest: dict[int, tuple[int, int]] = {}
    for version_id, job_id, number in NotebookVersion.objects.filter(job_id__in=ids).values_list(
        "id", "job_id", "number"
    ):
        if job_id not in latest or number > latest[job_id][1]:
            latest[job_id] = (version_id, number)
    # Backfill and sweep runs do not count for the overlap policy of the regular slots.
    active = set(
        Run.objects.filter(
            job_id__in=ids, state__in=Run.ACTIVE_STATES, group__isnull=True
        ).values_list("job_id", flat=True)
    )
    earliest = min((slots[0] for slots, _ in plans.values() if slots), default=now)
    existing = set(
        Run.objects.filter(job_id__in=ids, scheduled_for__gte=earliest).values_list(
            "job_id", "scheduled_for"
        )
    )
    runs = []
    for job in jobs:
        slots, job.next_run_at = plans[job.pk]
        for slot in slots:
            if (job.pk, slot) in existing or job.pk not in latest:
                continue
            run = Run.for_slot(job, slot, latest[job.pk][0], active=job.pk in active, now=now)
            if run.state == State.QUEUED and (refused := room.refusal(job.owner_id)):
                run = Run.for_slot(
                    job, slot, latest[job.pk][0], active=True, now=now, refused=refused
                )
            if run.state == State.QUEUED:
                _hold_new(run, room.hold(job.owner_id), now)
            runs.append(run)
    Run.objects.bulk_create(runs)
    RunEvent.objects.bulk_create(
        RunEvent(run=run, attempt=0, state=run.state, message=run.creation_message) for run in runs
    )
    Job.objects.bulk_update(jobs, ["next_run_at"])
    _enqueue_all([run.pk for run in runs if run.state == State.QUEUED and not run.held_since])
    if runs:
        log.info("dispatched %s runs for %s jobs", len(runs), len(jobs))
    return runs


def _dispatch_job(
    job: Job, plan: tuple[list[datetime], datetime | None], owner: Limits
) -> list[Run]:
    """Dispatch one locked, due job slot by slot, each in its own savepoint: the path
    taken when its batch met a slot that got a run meanwhile (the slot is skipped)."""
    slots, next_run_at = plan
    version = job.latest_version()
    active = job.runs.active().filter(group__isnull=True).exists()
    room = _Room(_active_by_owner({job.owner_id}), {job.owner_id: owner})
    runs = []
    for slot in slots:
        try:
            with transaction.atomic():
                run = Run.for_slot(job, slot, version.pk, active=active, now=timezone.now())
                if run.state == State.QUEUED and (refused := room.refusal(job.owner_id)):
                    run = Run.for_slot(
                        job, slot, version.pk, active=True, now=timezone.now(), refused=refused
                    )
                if run.state == State.QUEUED:
                    _hold_new(run, room.hold(job.owner_id), timezone.now())
                runs.append(_save_new_run(run))
        except IntegrityError:
            log.info("slot already has a run job=%s slot=%s", job.pk, slot.isoformat())
    job.next_run_at = next_run_at
    job.save(update_fields=["next_run_at"])
    if runs:
        log.info("dispatched job=%s slots=%s", job.pk, [str(r.scheduled_for) for r in runs])
    return runs
