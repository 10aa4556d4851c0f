"""The streaming pings' generator: deterministic batches of pings landing in a directory.

``write_batch(landing_dir, batch_index, seed=...)`` writes one Parquet file,
``pings-<batch_index, 6 digits>.parquet``, of ``pings`` main pings with the schema
``STREAM_SCHEMA``: the columns of ``telemetry.Pings`` (the data columns of
``telemetry.sample``, then the partition columns ``submission_date``, ``app``,
``channel``, ``version``, ``build_id`` as strings) followed by the event time,
``submission_timestamp`` (UTC). ``telemetry.PingsStream`` reads these files as they
arrive; the command ``python -m telemetry.stream --landing DIR --every 5`` writes one
batch every 5 seconds.

Population: every batch of a seed draws its pings (with replacement) from one pool of
``POOL_PINGS`` pings simulated by ``telemetry.sample`` with that seed, so the same
clients come back batch after batch with the same OS, add-ons and channel (what
per-client state and add-on joins need); each drawn ping gets a new ``document_id``
and an event time. Hangs, histograms and session lengths are those of the pool's
pings (``telemetry.sample`` describes them).

Event time: batch ``i`` is due at ``batch_time(i)`` = ``EPOCH`` + ``i`` x
``BATCH_SPACING`` (deterministic, never the wall clock), or at the ``at`` given to
``write_batch``. Its pings' ``submission_timestamp`` lie in ``[at - MAX_DELAY, at]``
and the latest one is exactly ``at``: most within ``BATCH_SPACING`` before ``at``, a
share ``LATE_SHARE`` later than that (up to ``MAX_DELAY``), so they belong to windows
that earlier files already filled. A watermark delay of at least ``MAX_DELAY`` drops
none of them; a batch written with a later ``at`` moves the watermark past every
earlier window. ``submission_date`` is the UTC day of ``submission_timestamp``.

Determinism: the file's bytes depend only on ``(seed, batch_index, pings, at)`` and
the versions of numpy, pyarrow and ``telemetry.sample``'s simulation.

Atomicity: the file is written under a hidden temporary name (``.pings-...tmp``, which
Spark's file sources skip) in the landing directory, then renamed into place, so a
reader never sees a partial file.

Retention: after each batch it writes, ``write_batch`` (and so the command) deletes the
batch files that are more than ``retain`` seconds of event time older than that batch
(``prune_landing``; default ``RETAIN_SECONDS``, 24 h of event time; ``retain=0`` /
``--retain 0`` keeps everything), so the directory no longer grows without end: at one
file every 10 s it would, and Spark's file source lists the whole directory at every
trigger.
Only regular files named ``pings-<digits>.parquet`` are deleted (never a symlink, whose
target is not ours, never another name), and hidden temporary files ``.pings-*.tmp``
that a killed generator left, once their mtime is more than ``TEMP_MAX_AGE`` old.

A file's age is its batch's event time, ``batch_time(i)`` from the index in its name,
not its mtime, because that is what survives a restart of the generator: the sequence
continues from the highest index (``next_batch_index``), so only batches actually
written age the older files. By mtime, a generator (and with it, under honcho, every
continuous job) stopped for longer than ``retain`` would delete the whole directory with
its first batch after the restart, just when the restarted jobs have the most to catch
up on; copying or restoring the directory, or a clock step, would also change the ages.
The reference is the batch just written, never the highest index in the directory, so
``--start`` below the existing files deletes nothing newer than what it writes. A file
written with ``at=`` ages by its index too. Consequence: ``retain`` counts event time,
``BATCH_SPACING`` (60 s) per batch whatever ``--every``: the default keeps the newest
batch and the 1,440 before it (one exactly ``retain`` old stays), 4 h of a generator
writing every 10 s (``--retain 518400`` keeps a day of it).

Trade-off: a continuous job stopped (paused, failed, queued) for longer than that misses
the files deleted meanwhile: Spark's file source never lists them, and the job goes on
with the files still there (its checkpoint only remembers names). A file that a
micro-batch had already planned to read but that is deleted before the read would fail
the batch (Spark's ``spark.sql.files.ignoreMissingFiles``, off by default);
``PingsStream`` sets the reader option ``ignoreMissingFiles`` so that it is skipped
instead, as it would have been had it gone before the batch was planned. That is why
the retention must be long, far longer than jobs lag (the Procfile keeps a day).
Spark's own ``maxFileAge`` (default 7 days, by mtime, relative to the newest file) is
not the bound we rely on: it only makes Spark forget or ignore old files, it deletes
nothing, and the retention is shorter. The retention lives here rather than in Spark
because the landing directory is shared, read-only, by every user's stream: Spark's
``cleanSource`` would need write access, and the docs forbid it for a path read by
several queries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import sample

EVENT_TIME_COLUMN = "submission_timestamp"

STREAM_SCHEMA = pa.schema(
    list(sample.SCHEMA)
    + [pa.field(column, pa.string(), nullable=False) for column in sample.PARTITION_COLUMNS]
    + [pa.field(EVENT_TIME_COLUMN, pa.timestamp("us", tz="UTC"), nullable=False)]
)
"""Schema of every batch file: ``Pings``' columns, then the event time."""

EPOCH = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
"""Event time of batch 0: the day after the default sample of ``telemetry.sample``."""

BATCH_SPACING = dt.timedelta(seconds=60)
"""Event time between two consecutive batches (whatever the wall-clock period)."""

MAX_DELAY = dt.timedelta(minutes=5)
"""The earliest ping of a batch is at most this long before the batch's time."""

LATE_SHARE = 0.05
"""Share of pings more than ``BATCH_SPACING`` before their batch's time."""

POOL_PINGS = 10_000
"""Pings simulated once per seed; batches draw from them (about 2,500 clients)."""

POOL_END_DATE = "20261115"
POOL_DAYS = 14

RETAIN_SECONDS = 86_400
"""Default retention, in seconds of event time (``BATCH_SPACING`` per batch): 1,440
batches before the newest."""

TEMP_MAX_AGE = 60.0
"""Seconds (of mtime, wall clock) after which a leftover temporary file is deleted."""

FILE_RE = re.compile(r"^pings-(\d+)\.parquet$")
TEMP_RE = re.compile(r"^\.pings-.*\.tmp$")  # write_batch's: .pings-<index>.parquet.<random>.tmp

_BATCH_STREAM = 7  # seeds batch i's generator with [seed, 7, i], apart from sample's streams


def batch_file_name(batch_index: int) -> str:
    return f"pings-{batch_index:06d}.parquet"


def batch_time(batch_index: int) -> dt.datetime:
    """The event time of batch ``batch_index``: ``EPOCH + batch_index * BATCH_SPACING``."""
    return EPOCH + batch_index * BATCH_SPACING


@functools.lru_cache(maxsize=4)
def _pool(seed: int) -> pa.Table:
    """The pool of a seed: ``sample.SCHEMA`` columns plus ``app``, ``channel``,
    ``version`` and ``build_id`` (the submission day is set per batch)."""
    end = dt.datetime.strptime(POOL_END_DATE, "%Y%m%d").date()
    dates = [end - dt.timedelta(days=POOL_DAYS - 1 - i) for i in range(POOL_DAYS)]
    table, partition_keys, _ = sample._build_pings(POOL_PINGS, dates, seed)
    keys = pa.array(partition_keys, pa.list_(pa.string())).take(table.column("_partition"))
    table = table.drop_columns(["_partition"])
    for position, column in enumerate(sample.PARTITION_COLUMNS):
        if column != "submission_date":
            table = table.append_column(column, pc.list_element(keys, position))
    return table


def build_batch(batch_index: int, *, seed: int, pings: int = 200, at=None) -> pa.Table:
    """The rows of batch ``batch_index`` as an Arrow table of ``STREAM_SCHEMA``, sorted
    by event time then ``document_id`` (what ``write_batch`` writes).

    ``at``: the batch's time, an aware ``datetime`` (default ``batch_time(batch_index)``).
    Raises ``TypeError``/``ValueError`` for a non-int or negative ``batch_index`` or
    ``seed``, ``pings`` < 1, or a naive ``at``.
    """
    for name, value, minimum in (
        ("batch_index", batch_index, 0),
        ("seed", seed, 0),
        ("pings", pings, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if at is None:
        at = batch_time(batch_index)
    if not isinstance(at, dt.datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at must be an aware datetime (e.g. in UTC), got {at!r}")

    pool = _pool(seed)
    rng = np.random.default_rng([seed, _BATCH_STREAM, batch_index])
    rows = rng.integers(0, pool.num_rows, size=pings)
    document_ids = sample._uuid4_strings(rng, pings)
    spacing_ms = BATCH_SPACING // dt.timedelta(milliseconds=1)
    max_ms = MAX_DELAY // dt.timedelta(milliseconds=1)
    late = rng.random(pings) < LATE_SHARE
    delay_ms = np.where(
        late,
        rng.integers(spacing_ms, max_ms + 1, size=pings),
        rng.integers(0, spacing_ms, size=pings),
    )
    delay_ms -= delay_ms.min()  # the latest ping is the batch's time
    at_us = np.datetime64(at.astimezone(dt.UTC).replace(tzinfo=None), "us")
    event = at_us - delay_ms.astype("timedelta64[ms]").astype("timedelta64[us]")
    order = np.lexsort((document_ids, event))
    rows, document_ids, event = rows[order], document_ids[order], event[order]

    picked = pool.take(pa.array(rows))
    days = np.char.replace(np.datetime_as_string(event.astype("datetime64[D]")), "-", "")
    columns = {name: picked.column(name) for name in picked.column_names}
    columns["document_id"] = pa.array(document_ids, pa.string())
    columns["submission_date"] = pa.array(days, pa.string())
    columns[EVENT_TIME_COLUMN] = pa.array(event, pa.timestamp("us", tz="UTC"))
    return pa.table([columns[f.name] for f in STREAM_SCHEMA], schema=STREAM_SCHEMA)


def write_batch(
    landing_dir: str | os.PathLike,
    batch_index: int,
    *,
    seed: int,
    pings: int = 200,
    at=None,
    retain: float = RETAIN_SECONDS,
) -> Path:
    """Write batch ``batch_index`` (``build_batch``) to
    ``landing_dir/pings-<batch_index:06d>.parquet`` atomically; return its path.

    The directory is created if missing. The file is written under a hidden temporary
    name in the same directory, then renamed into place (replacing an earlier file of
    that index), so readers see either no file or the whole file. Same arguments, same
    bytes. Then the retention: ``prune_landing(landing_dir, batch_index, retain)``
    deletes the batch files more than ``retain`` seconds of event time older than this
    one, and stale temporary files (``retain=0`` keeps every batch file).

    Raises what ``build_batch`` raises, ``TypeError``/``ValueError`` for a ``retain``
    that is not a number >= 0 (before writing anything), and ``OSError`` on write
    errors (the temporary file is removed) or deletion errors (the new file stays).
    """
    _check_retain(retain)
    table = build_batch(batch_index, seed=seed, pings=pings, at=at)
    landing = Path(landing_dir).expanduser()
    landing.mkdir(parents=True, exist_ok=True)
    final = landing / batch_file_name(batch_index)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=landing)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # Snappy, as telemetry.sample: read everywhere, fast to write.
        pq.write_table(table, tmp, compression="snappy")
        # mkstemp makes the file private (0600); notebooks' sandboxes read it.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    prune_landing(landing, batch_index, retain)
    return final


def _check_retain(retain) -> None:
    if isinstance(retain, bool) or not isinstance(retain, int | float):
        raise TypeError(f"retain must be a number of seconds, got {retain!r}")
    if not retain >= 0:  # also rejects NaN
        raise ValueError(f"retain must be >= 0 seconds, got {retain!r}")


def prune_landing(
    landing_dir: str | os.PathLike,
    newest_index: int,
    retain: float = RETAIN_SECONDS,
    *,
    now: float | None = None,
) -> list[Path]:
    """Delete what the retention drops from ``landing_dir``; return the deleted paths,
    sorted.

    Deleted: regular files named ``pings-<digits>.parquet`` whose batch time
    ``batch_time(i)`` is before ``batch_time(newest_index) - retain`` (``retain`` in
    seconds of event time; 0 keeps them all), and regular files named ``.pings-*.tmp``
    (``write_batch``'s temporary files, left by a generator killed mid-write) whose
    mtime is more than ``TEMP_MAX_AGE`` seconds before ``now`` (default
    ``time.time()``). Nothing else: no other name, no symlink (checked without
    following it: a link named like a batch file is left, as is its target), no
    directory. A file that vanishes meanwhile is skipped; a missing directory deletes
    nothing. Why event time and not mtime for the batch files: the module docstring.

    Raises ``TypeError``/``ValueError`` for a bad ``retain`` or a negative
    ``newest_index``, and ``OSError`` when a deletion or the listing fails otherwise.
    """
    _check_retain(retain)
    if isinstance(newest_index, bool) or not isinstance(newest_index, int):
        raise TypeError(f"newest_index must be an int, got {newest_index!r}")
    if newest_index < 0:
        raise ValueError(f"newest_index must be >= 0, got {newest_index!r}")
    cutoff = batch_time(newest_index) - dt.timedelta(seconds=retain)
    temp_cutoff = (time.time() if now is None else now) - TEMP_MAX_AGE
    doomed = []
    try:
        entries = list(os.scandir(landing_dir))
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            match = FILE_RE.match(entry.name)
            if match:
                old = retain > 0 and batch_time(int(match.group(1))) < cutoff
            elif TEMP_RE.match(entry.name):
                old = entry.stat(follow_symlinks=False).st_mtime < temp_cutoff
            else:
                old = False
        except FileNotFoundError:
            continue
        if old:
            doomed.append(Path(entry.path))
    # unlink never follows a symlink: had the file been swapped for one since the check,
    # the link would go, never its target.
    for path in doomed:
        path.unlink(missing_ok=True)
    return sorted(doomed)


def next_batch_index(landing_dir: str | os.PathLike) -> int:
    """One more than the highest batch index in ``landing_dir`` (0 if none or missing)."""
    try:
        names = os.listdir(landing_dir)
    except FileNotFoundError:
        return 0
    indexes = [int(m.group(1)) for m in map(FILE_RE.match, names) if m]
    return max(indexes) + 1 if indexes else 0


def main(argv: list[str] | None = None, *, sleep=time.sleep, clock=time.monotonic) -> int:
    """``python -m telemetry.stream``: write a batch every ``--every`` seconds.

    Prints each file's path as it lands. Runs ``--batches`` batches, or until
    interrupted (Ctrl-C: exit 0). Starts at ``--start``, by default after the highest
    batch already in the directory, so a restart continues the sequence. After each
    batch, deletes the files older than ``--retain`` seconds of event time (default
    ``RETAIN_SECONDS``; 0 keeps all; see "Retention" in the module docstring).
    """
    from .paths import STREAM_ROOT_ENV, stream_root

    parser = argparse.ArgumentParser(
        prog="python -m telemetry.stream",
        description="Write deterministic batches of telemetry pings into a landing "
        "directory, for telemetry.PingsStream.",
    )
    parser.add_argument(
        "--landing",
        default=None,
        help=f"landing directory (default ${STREAM_ROOT_ENV}, else ./sample/stream)",
    )
    parser.add_argument(
        "--every", type=float, default=5.0, help="seconds between batches (default 5)"
    )
    parser.add_argument("--batches", type=int, default=None, help="stop after N (default: never)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pings", type=int, default=200, help="pings per batch (default 200)")
    parser.add_argument("--start", type=int, default=None, help="first batch index")
    parser.add_argument(
        "--retain",
        type=float,
        default=RETAIN_SECONDS,
        metavar="SECONDS",
        help=f"after each batch, delete the batch files more than SECONDS of event time "
        f"older than it ({BATCH_SPACING.total_seconds():g} s per batch, whatever --every; "
        f"default {RETAIN_SECONDS}: keeps the newest and the "
        f"{RETAIN_SECONDS / BATCH_SPACING.total_seconds():g} before it); 0 keeps all",
    )
    args = parser.parse_args(argv)
    if args.every < 0 or (args.batches is not None and args.batches < 0):
        parser.error("--every and --batches must be >= 0")
    if not args.retain >= 0:
        parser.error("--retain must be >= 0")
    root = stream_root(args.landing)
    if root.local is None:
        parser.error(f"--landing must be a local directory, got {root.uri}")
    start = next_batch_index(root.local) if args.start is None else args.start
    began = clock()
    try:
        k = 0
        while args.batches is None or k < args.batches:
            try:
                path = write_batch(
                    root.local, start + k, seed=args.seed, pings=args.pings, retain=args.retain
                )
            except (TypeError, ValueError) as exc:
                parser.error(str(exc))
            print(path, flush=True)
            k += 1
            if args.batches is not None and k >= args.batches:
                break
            sleep(max(0.0, began + k * args.every - clock()))
    except KeyboardInterrupt:
        pass
    return 0
