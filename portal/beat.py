"""Celery beat schedules of the portal."""

import math
from datetime import datetime, timedelta

from celery.schedules import schedstate, schedule


class aligned(schedule):  # noqa: N801  (lower case like celery's own ``schedule`` and ``crontab``)
    """A fixed interval whose ticks fall on the clock's grid: at every multiple of the
    interval since the Unix epoch (UTC), not at multiples since beat started.

    With an interval that divides 60 s (the default dispatch interval, 2 s, does), a tick
    falls on every minute boundary, which is where every slot of a 5-field cron expression
    lies: the dispatcher then runs right at a slot instead of up to one interval after it
    (with plain ``schedule`` the lag is the phase of beat's start time, uniform over the
    interval). A tick missed while beat was down or busy fires at once, then the grid
    resumes. ``run_every``: seconds (float) or a timedelta, > 0.
    """

    def _next_tick_after(self, moment: datetime) -> float:
        """The first grid point strictly after ``moment``, in seconds since the epoch."""
        step = self.seconds
        return (math.floor(moment.timestamp() / step) + 1) * step

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time from now to the first grid point after ``last_run_at`` (negative when
        that point has passed)."""
        now = self.maybe_make_aware(self.now())
        return timedelta(
            seconds=self._next_tick_after(self.maybe_make_aware(last_run_at)) - now.timestamp()
        )

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(True, seconds to the next grid point)`` once the grid point after
        ``last_run_at`` has been reached, else ``(False, seconds until it)``."""
        remaining_s = self.remaining_estimate(last_run_at).total_seconds()
        if remaining_s > 0:
            return schedstate(is_due=False, next=remaining_s)
        now = self.maybe_make_aware(self.now())
        return schedstate(
            is_due=True, next=max(self._next_tick_after(now) - now.timestamp(), 0.001)
        )

    def __repr__(self) -> str:
        return f"<aligned freq: {self.human_seconds}>"
