"""The dispatcher's beat schedule ticks on the clock's grid, where cron slots lie."""

import pickle
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from portal.beat import aligned


def at(*args, **kw):
    return datetime(2026, 3, 1, *args, tzinfo=UTC, **kw)


def clock(moment):
    return lambda: moment


@pytest.mark.parametrize(
    ("last_run", "now", "due", "next_s"),
    [
        # Beat started at :07.3 (last_run_at = start): the first tick is at :08, not :09.3.
        (at(6, 0, 7, 300000), at(6, 0, 7, 300000), False, 0.7),
        (at(6, 0, 7, 300000), at(6, 0, 7, 999000), False, 0.001),
        # At the grid point it fires and the next check is the following grid point.
        (at(6, 0, 7, 300000), at(6, 0, 8), True, 2.0),
        # Fired a little late (publishing takes time): the next tick stays on the grid.
        (at(5, 59, 58, 4000), at(6, 0, 0, 4000), True, 1.996),
        # The minute boundary, where "0 6 * * *" lies, is a tick.
        (at(5, 59, 58, 4000), at(5, 59, 59, 999000), False, 0.001),
        # After beat was down for an hour the missed tick fires at once, then the grid resumes.
        (at(5, 0, 0), at(6, 0, 1, 500000), True, 0.5),
    ],
)
def test_ticks_fall_on_multiples_of_the_interval(last_run, now, due, next_s):
    sched = aligned(2.0, nowfun=clock(now))
    state = sched.is_due(last_run)
    assert state.is_due is due
    assert state.next == pytest.approx(next_s, abs=1e-6)


def test_a_fired_tick_is_not_due_again_before_the_next_grid_point():
    fired_at = at(6, 0, 0, 3000)
    assert aligned(2.0, nowfun=clock(at(6, 0, 1, 900000))).is_due(fired_at).is_due is False
    assert aligned(2.0, nowfun=clock(at(6, 0, 2))).is_due(fired_at).is_due is True


def test_survives_beats_schedule_file(tmp_path):
    """PersistentScheduler pickles entries into a shelve file and re-reads them after
    every sync (shelve's write-back cache is emptied): the grid must survive that."""
    from celery.beat import PersistentScheduler

    from portal.celery import app

    sched = pickle.loads(pickle.dumps(aligned(timedelta(seconds=2))))
    assert isinstance(sched, aligned) and sched.seconds == 2.0
    path = str(tmp_path / "beat")
    for _ in range(2):  # a fresh file, then one written by an earlier start
        beat = PersistentScheduler(app=app, schedule_filename=path)
        beat.sync()
        assert isinstance(beat.schedule["dispatch-due-runs"].schedule, aligned)
        beat.close()


def test_the_dispatcher_ticks_on_every_minute_boundary_by_default():
    entry = settings.CELERY_BEAT_SCHEDULE["dispatch-due-runs"]
    assert isinstance(entry["schedule"], aligned)
    assert 60 % entry["schedule"].seconds == 0
