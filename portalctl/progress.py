"""The live progress of a run on stderr: "cell 3 of 12 · 0:41".

On a terminal it is a rich progress bar redrawn in place; elsewhere (a CI log) it is one
plain line each time the state or the cell count changes, so a log gets no flood of
elapsed-time updates. "cell i of N" counts code cells done, as the run page does.
"""

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (ISO 8601, UTC) as an aware datetime; None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def format_elapsed(seconds: float) -> str:
    """``0:41``, ``12:05``, ``1:02:03``: minutes and seconds, hours when there are some."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def cells(run: dict[str, Any]) -> tuple[int, int]:
    """``(cells_done, cells_total)`` of a run's ``progress`` (0, 0 before the kernel counted)."""
    progress = run.get("progress") or {}
    return int(progress.get("cells_done") or 0), int(progress.get("cells_total") or 0)


def elapsed(run: dict[str, Any], now: datetime | None = None) -> float | None:
    """Seconds the current attempt has run: the API's ``duration_seconds`` (the server's
    clock, so a skewed client clock does not matter) or, without it, from ``started_at``
    to ``finished_at`` or ``now``."""
    if isinstance(run.get("duration_seconds"), int | float):
        return float(run["duration_seconds"])
    started = parse_time(run.get("started_at"))
    end = parse_time(run.get("finished_at")) or now
    if started is None or end is None:
        return None
    return (end - started).total_seconds()


def describe(run: dict[str, Any], now: datetime | None = None) -> str:
    """One line about a run: ``queued``, ``starting the kernel · 0:02``, ``cell 3 of 12 ·
    0:41`` (the API's progress text: while running, the code cell executing now) or, once
    it has ended, its state with the cells it got through."""
    state = str(run.get("state", "?"))
    done, total = cells(run)
    text = (run.get("progress") or {}).get("text") or (f"cell {done} of {total}" if total else "")
    seconds = elapsed(run, now)
    clock = f" · {format_elapsed(seconds)}" if seconds is not None else ""
    if state == "QUEUED":
        reason = run.get("state_reason")
        return f"queued ({reason})" if reason else "queued"
    if state == "RUNNING":
        return f"{text}{clock}" if text else f"starting the kernel{clock}"
    return f"{state.lower().replace('_', ' ')}{', ' + text if text else ''}{clock}"


class RunProgress:
    """Shows a run's progress on ``console`` (stderr) until ``close()``."""

    def __init__(self, console: Console, run_id: int) -> None:
        self.console = console
        self.run_id = run_id
        self.live = console.is_terminal
        self._last = ""
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if self.live:
            self._bar = Progress(
                TextColumn(f"run {run_id}"),
                BarColumn(),
                TextColumn("{task.description}"),
                console=console,
            )
            self._task = self._bar.add_task("submitted", total=None)
            self._bar.start()

    def update(self, run: dict[str, Any], now: datetime | None) -> None:
        """Show ``run`` (the API's JSON) as of ``now`` (the server's clock)."""
        line = describe(run, now)
        if self._bar is not None and self._task is not None:
            done, total = cells(run)
            self._bar.update(self._task, total=total or None, completed=done, description=line)
            return
        # One line per change of state or cell, without the clock that changes every poll.
        key = line.split(" · ", 1)[0]
        if key != self._last:
            self._last = key
            self.console.print(f"run {self.run_id}: {line}", highlight=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
