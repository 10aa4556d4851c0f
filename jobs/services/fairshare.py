"""Fair share when claiming: a user at their concurrency limit holds no worker process.

Each user may have at most ``Limits.max_running_runs`` runs RUNNING (USER_MAX_RUNNING_RUNS,
overridden per user; staff unlimited unless overridden). When a worker receives
``execute_run(X)`` for a run of a user:

- under the limit, it claims the user's *next eligible run in slot order*: X, or an older
  QUEUED run of the same user (held, below, or with its own message still on the way,
  which then finds nothing to claim), and X is held in its place. A run's place in slot
  order is its slot (``scheduled_for``), or its creation time for runs started by hand,
  then its id; runs waiting for a retry delay are not eligible;
- at the limit, it claims nothing: X stays QUEUED and is *held*: ``held_since`` is set,
  no queue message exists for it any more, and its reason says what it waits for
  ("Waiting: 2 of your runs are running, limit 2."). The worker moves on to the next
  message, so other users' runs go ahead.

A run is also held when it is created (``hold_reason``: Run now, Re-run, a schedule
slot) if its owner's runs RUNNING or QUEUED with a message already fill their limit: a
flood of one user's runs then never enters the queue everyone shares, and the worker
meets only as many of their messages as they may run.

When one of the user's runs ends (or a queued one is cancelled), ``release_held`` sends
the oldest held runs of the user to the queue again, as many as the user now has room
for.

Continuous runs (``streams``) are outside all of this: never held, never chosen in
another run's place, not counted against the limit; their queue has a worker of its own.

A backfill or sweep (``RunGroup``) has a concurrency limit of its own: its runs beyond it
are created held *and* ``waits_for_group``, which no claim takes and no user-level release
sends. ``release_held`` first lets each of the user's groups move its oldest waiting runs
up to its limit (``_make_room_in_groups``); from then on they are held runs like any
other. The reaper calls ``release_all`` every pass as a safety net (a worker killed between
a run's end and its release; a limit raised in the admin), and never re-enqueues a held
run as "stuck".

Every step happens under a lock on the user's row (``quotas.limits.lock_user``), so two
workers claiming for one user, or a claim racing a release, see each other's writes; the
claim itself is still the conditional UPDATE by id of ``execution.claim_run``, so nothing
is claimed twice. See docs/run-states.md.
"""

import logging
from datetime import datetime

from django.db.models import DateTimeField, F, Q, QuerySet
from django.db.models.functions import Coalesce

from jobs.models import Run, RunEvent, RunGroup
from quotas.limits import limits_by_owner, lock_user

log = logging.getLogger(__name__)

State = Run.State


def slot_order() -> Coalesce:
    """The expression runs of one user start in: their slot (or the slot a backfill re-run
    is for), or creation time, in UTC."""
    return Coalesce("scheduled_for", "logical_at", "created_at", output_field=DateTimeField())


def _running_limit(owner_id: int) -> int | None:
    return limits_by_owner({owner_id})[owner_id].max_running_runs


def _batch() -> "QuerySet[Run]":
    """Runs that take batch capacity: all but continuous runs, which the ``streams``
    queue's own worker runs and which a user's concurrency limit does not count."""
    return Run.objects.exclude(trigger=Run.Trigger.CONTINUOUS)


def _eligible(now: datetime) -> "QuerySet[Run]":
    """QUEUED runs that a claim could take at ``now``: attempts left, retry delay over,
    not waiting for room in their backfill or sweep."""
    return Run.objects.filter(
        state=State.QUEUED, attempt__lt=F("max_attempts"), waits_for_group=False
    ).filter(Q(not_before__isnull=True) | Q(not_before__lte=now))


def waiting_reason(running: int, limit: int, queued: bool = False) -> str:
    """The reason shown on a held run, e.g. "Waiting: 2 of your runs are running, limit 2."
    (``queued``: "... are queued or running ..." for a run held when it was created)."""
    runs = "runs is" if running == 1 else "runs are"
    doing = "queued or running" if queued else "running"
    return f"Waiting: {running} of your {runs} {doing}, limit {limit}."


def hold_reason(owner_id: int) -> str:
    """Why a run of ``owner_id`` created now must be held rather than sent to the queue
    ("" if it may be sent): their runs QUEUED with a message or RUNNING already fill their
    concurrency limit, so a message would only be consumed to hold it. Holding at creation
    keeps a flood of one user's runs out of the queue that everyone shares. Call under
    the owner's lock (``lock_user``)."""
    limit = _running_limit(owner_id)
    if limit is None:
        return ""
    unheld = (
        _batch()
        .filter(job__owner_id=owner_id, state__in=Run.ACTIVE_STATES, held_since__isnull=True)
        .count()
    )
    return waiting_reason(unheld, limit, queued=True) if unheld >= limit else ""


def choose_run(run_id: int, now: datetime) -> int | None:
    """Which run a worker that received ``execute_run(run_id)`` should claim: ``run_id``
    itself, an older QUEUED run of the same owner, or None (nothing: the owner is at their
    limit, and ``run_id`` is now held, or ``run_id`` is not claimable at all).

    Must be called inside the claim's transaction: it locks the owner's row, which the
    caller holds until its claim commits.
    """
    row = Run.objects.filter(pk=run_id).values_list("job__owner_id", "trigger").first()
    if row is None:
        return None
    owner_id, trigger = row
    limit = _running_limit(owner_id)
    if limit is None or trigger == Run.Trigger.CONTINUOUS:
        return run_id  # a continuous run has a worker of its own: no batch capacity
    lock_user(owner_id)
    mine = _batch().filter(job__owner_id=owner_id)
    running = mine.filter(state=State.RUNNING).count()
    if running >= limit:
        _hold(run_id, running, limit, now)
        return None
    candidates = (
        _eligible(now)
        .exclude(trigger=Run.Trigger.CONTINUOUS)
        .filter(job__owner_id=owner_id)
        .annotate(order=slot_order())
        .order_by("order", "id")
        .values_list("pk", flat=True)
    )
    chosen = candidates.first()
    if chosen is not None and chosen != run_id:
        # An older run of the same owner waits: it goes first, and this one waits in its
        # place (held: its message is consumed; a release sends it again).
        _hold(run_id, running + 1, limit, now)
    return chosen


def _hold(run_id: int, running: int, limit: int, now: datetime) -> None:
    """Mark the QUEUED run ``run_id`` held (no queue message; released by ``release_held``).
    The first time it is held, an event says why."""
    reason = waiting_reason(running, limit)
    queued = Run.objects.filter(pk=run_id, state=State.QUEUED)
    if queued.filter(held_since__isnull=True).update(held_since=now, state_reason=reason):
        run = Run.objects.only("pk", "attempt").get(pk=run_id)
        RunEvent.objects.create(run=run, attempt=run.attempt, state=State.QUEUED, message=reason)
        log.info("held run=%s: %s", run_id, reason)
    else:
        queued.update(state_reason=reason)


def release_held(owner_id: int, now: datetime) -> list[int]:
    """Send the oldest held runs of ``owner_id`` to the queue again, as many as the owner has
    room for under their limit beside their runs RUNNING or QUEUED with a message (all of
    them when they have no limit any more). Call inside a transaction; messages go out
    after commit. Returns the ids released."""
    lock_user(owner_id)
    _make_room_in_groups(owner_id)
    held = Run.objects.filter(
        job__owner_id=owner_id,
        state=State.QUEUED,
        held_since__isnull=False,
        waits_for_group=False,
    )
    limit = _running_limit(owner_id)
    ordered = held.annotate(order=slot_order()).order_by("order", "id")
    if limit is None:
        ids = list(ordered.values_list("pk", flat=True))
    else:
        in_flight = (
            _batch()
            .filter(job__owner_id=owner_id, state__in=Run.ACTIVE_STATES, held_since__isnull=True)
            .count()
        )
        room = max(limit - in_flight, 0)
        ids = list(ordered.values_list("pk", flat=True)[:room]) if room else []
    if ids:
        from jobs.services.dispatch import _enqueue_all  # dispatch holds runs through here

        Run.objects.filter(pk__in=ids, state=State.QUEUED).update(
            held_since=None, enqueued_at=now, state_reason=""
        )
        _enqueue_all(ids)
        log.info("released runs=%s of user=%s", ids, owner_id)
    return ids


def _make_room_in_groups(owner_id: int) -> None:
    """In each of ``owner_id``'s groups with waiting runs, stop the oldest from waiting (in
    slot order, then id), up to the group's ``max_concurrent`` beside its runs already
    QUEUED or RUNNING without waiting. Call under the owner's lock."""
    waiting = Run.objects.filter(job__owner_id=owner_id, state=State.QUEUED, waits_for_group=True)
    for group_id in set(waiting.values_list("group_id", flat=True)):
        in_group = Run.objects.filter(group_id=group_id)
        limit = RunGroup.objects.filter(pk=group_id).values_list("max_concurrent", flat=True)
        in_flight = in_group.filter(state__in=Run.ACTIVE_STATES, waits_for_group=False).count()
        room = max((limit.first() or 1) - in_flight, 0)
        if not room:
            continue
        ids = list(
            in_group.filter(state=State.QUEUED, waits_for_group=True)
            .annotate(order=slot_order())
            .order_by("order", "id")
            .values_list("pk", flat=True)[:room]
        )
        Run.objects.filter(pk__in=ids).update(waits_for_group=False)


def release_all(now: datetime) -> int:
    """``release_held`` for every user with held runs; the reaper's safety net. Call inside
    a transaction. Returns how many runs were released."""
    owners = set(
        Run.objects.filter(state=State.QUEUED, held_since__isnull=False).values_list(
            "job__owner_id", flat=True
        )
    )
    return sum(len(release_held(owner_id, now)) for owner_id in sorted(owners))
