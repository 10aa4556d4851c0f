"""A continuous run's live metrics: the worker's side of the progress file.

The kernel's helper (``telemetry.streaming.report_progress``) appends one JSON line per
streaming progress event (and one per idle event) to ``PROGRESS_FILE_NAME`` in the
sandbox's home, whose path the kernel's environment names (``PORTAL_PROGRESS_FILE``).
At each heartbeat the worker reads what the file gained (``ProgressTail.poll``) and
stores the last ``MAX_POINTS`` points on the run (``Run.stream_progress``, with
``last_batch_at`` and ``stream_event_at``), fenced by the attempt
(``jobs.services.execution.record_stream_progress``).

The file is written by user code, so it is read like the logs (``jobs.logs.open_beneath``:
beneath the sandbox's directory, no symlink, a regular file of the sandbox's uid or the
worker's), at most ``READ_MAX_BYTES`` per poll (the newest), and every line is checked:
only known keys of the expected types are kept, text is cut, anything else is dropped.
A partial last line (the kernel is writing it) waits for the next poll.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.logs import open_beneath, read_tail

#: The progress file's name in the sandbox's home.
PROGRESS_FILE_NAME = ".portal-progress.jsonl"
#: Points kept on the run (at one batch a second, the last five minutes).
MAX_POINTS = 300
#: Events (batch or idle: time and query) kept on the run to measure its interval.
MAX_EVENTS = 60
#: Bytes read per poll at most (the newest; older lines are skipped).
READ_MAX_BYTES = 256 * 2**10
#: A longer line is dropped (a well-formed one takes well under 3 KB).
MAX_LINE_BYTES = 8 * 2**10
#: Characters kept of text values (query names, sources' descriptions and offsets).
TEXT_CHARS = 200

_NUMBERS = (
    "batchId",
    "numInputRows",
    "inputRowsPerSecond",
    "processedRowsPerSecond",
    "durationMs",
    "stateRows",
)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from Spark (``2026-12-03T10:00:00.000Z``) as an aware UTC datetime,
    or None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def _text(value: Any) -> str:
    return value[:TEXT_CHARS] if isinstance(value, str) else ""


def clean_line(raw: bytes) -> dict | None:
    """The point of one line of the progress file, or None if it is not a well-formed
    progress or idle record. A point has ``t`` (ISO UTC), ``query`` (the query's name, or
    its id's first 8 characters), and for a batch the numbers of ``_NUMBERS`` (or None),
    ``watermark`` and ``sources`` (a list of ``{"description", "endOffset"}``); an idle
    record has ``idle`` True instead."""
    if len(raw) > MAX_LINE_BYTES:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    at = parse_time(record.get("timestamp"))
    if at is None:
        return None
    query = _text(record.get("name")) or _text(record.get("id"))[:8]
    point: dict[str, Any] = {"t": at.isoformat().replace("+00:00", "Z"), "query": query}
    if record.get("idle") is True:
        point["idle"] = True
        return point
    for key in _NUMBERS:
        point[key] = _finite(record.get(key))
    watermark = parse_time(record.get("watermark"))
    point["watermark"] = watermark.isoformat().replace("+00:00", "Z") if watermark else None
    sources = record.get("sources")
    point["sources"] = [
        {"description": _text(s.get("description")), "endOffset": _text(s.get("endOffset"))}
        for s in (sources if isinstance(sources, list) else [])[:8]
        if isinstance(s, dict)
    ]
    return point


@dataclass
class ProgressTail:
    """Reads what a sandbox's progress file gained since the last poll.

    ``root`` is the sandbox's directory and ``parts`` the file's path below it (its home,
    then ``PROGRESS_FILE_NAME``); ``uids`` the owners a file may have. ``points`` keeps
    the last MAX_POINTS batch points, ``events`` the times and queries of the last
    MAX_EVENTS events of either kind (batch or idle: what ``Run.stream_interval``
    measures); ``last_batch_at`` and ``last_event_at`` are the times of the newest batch
    and of the newest event of either kind.
    """

    root: Path
    parts: tuple[str, ...]
    uids: set[int]
    offset: int = 0
    inode: int | None = None
    points: deque = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    events: deque = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    last_batch_at: datetime | None = None
    last_event_at: datetime | None = None

    def poll(self) -> bool:
        """Read the complete lines the file gained; True if an event was read. A file
        that shrank or was replaced (the kernel empties it past its size) is read again
        from its beginning; a missing or refused file (a symlink, a FIFO, another uid's)
        reads as nothing."""
        fd = open_beneath(self.root, self.parts, self.uids)
        if fd is None:
            return False
        try:
            info = os.fstat(fd)
            if info.st_ino != self.inode or info.st_size < self.offset:
                self.inode, self.offset = info.st_ino, 0
            data, cut = read_tail(fd, self.offset, READ_MAX_BYTES)
        finally:
            os.close(fd)
        start = self.offset + cut
        if cut:  # the read began inside a line: skip to the next one
            newline = data.find(b"\n")
            if newline < 0:  # all of it inside one overlong line: skip it
                self.offset = start + len(data)
                return False
            data, start = data[newline + 1 :], start + newline + 1
        end = data.rfind(b"\n")
        if end < 0:  # only a partial line: wait for its end (unless it is too long)
            if len(data) > MAX_LINE_BYTES:
                self.offset = start + len(data)
            return False
        self.offset = start + end + 1
        seen = False
        for raw in data[:end].split(b"\n"):
            point = clean_line(raw)
            if point is None:
                continue
            seen = True
            at = parse_time(point["t"])
            self.last_event_at = max(filter(None, (self.last_event_at, at)))
            self.events.append({"t": point["t"], "query": point["query"]})
            if not point.get("idle"):
                self.points.append(point)
                self.last_batch_at = max(filter(None, (self.last_batch_at, at)))
        return seen

    def stored(self) -> dict:
        """What ``Run.stream_progress`` holds: ``points`` (oldest first, without their
        sources), ``sources`` (of the newest batch of each query) and ``events``."""
        sources: dict[str, list] = {}
        points = []
        for point in self.points:
            sources[point["query"]] = point["sources"]
            points.append({k: v for k, v in point.items() if k != "sources"})
        return {"points": points, "sources": sources, "events": list(self.events)}
