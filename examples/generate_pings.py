"""Generate a deterministic sample of Firefox-style telemetry "main" pings as Parquet.

The sample is what ``examples/telemetry_hello_world.ipynb`` reads. It imitates the
layout of Mozilla's historical ping datasets: one row per ping, Hive-style partition
directories, one Parquet file per partition::

    OUT/
      _generate_pings.json                  marker + summary (Spark and Arrow skip "_" files)
      submission_date=20261102/
        app=Firefox/
          channel=release/
            version=51.0.1/
              build_id=20261016031607/
                part-00000.parquet

Partition columns (directory names only, never inside the files; all strings):

- ``submission_date``: ``YYYYMMDD``, the UTC day the ping was received. The window is
  the ``days`` days ending with ``end_date`` (both included).
- ``app``: ``"Firefox"`` (about 98 % of pings) or ``"Fennec"`` (Firefox for Android).
- ``channel``: ``release`` / ``beta`` / ``aurora`` / ``nightly`` (Firefox about
  70 / 16 / 5 / 9 %; Fennec only release and beta).
- ``version``: consistent with the channel, as in one release train: release
  ``51.0.1``, ``51.0``, ``50.1.0``; beta ``52.0``; aurora ``53.0a2``; nightly ``54.0a1``.
- ``build_id``: ``YYYYMMDDhhmmss``, a few per version, dated relative to the window
  (release builds weeks before it, pre-release builds also inside it). A ping never
  carries a build dated after its submission date.

Note that Spark's partition discovery infers types from these directory names, so in a
DataFrame ``submission_date`` and ``build_id`` arrive as integers; ``version`` stays a
string because ``51.0.1`` is not a number.

Data columns (Parquet schema, in this order):

================  =========================  ==========================================
column            Arrow / Parquet type       meaning
================  =========================  ==========================================
client_id         string                     UUID v4 text (36 chars, lower-case hex);
                                             one per profile, reused across days.
                                             About ``pings // 4`` distinct values.
document_id       string                     UUID v4 text, unique per ping.
os_name           string                     ``Windows_NT``, ``Darwin`` or ``Linux``
                                             for Firefox; ``Android`` for Fennec.
os_version        string                     e.g. ``10.0``/``6.1`` (Windows), kernel
                                             release ``16.4.0`` (Darwin), ``4.4.0``
                                             (Linux), SDK level ``24`` (Android).
architecture      string                     ``x86``, ``x86-64`` or ``arm``.
e10s_enabled      bool                       multi-process on (always False on Fennec).
addons            list<string> (not null)    0 to 6 add-on ids, the profile's set,
                                             sorted; an empty list when none.
session_length_s  int64                      whole seconds, 1 .. 604800 (7 days).
subsession_hours  double                     subsession length in hours,
                                             0 < h <= 24 and <= session_length_s/3600.
gc_ms             map<int32, int32>          GC_MS histogram of the subsession, sparse:
                  (not null)                 key = bucket lower bound in milliseconds,
                                             value = number of garbage collections whose
                                             duration fell in that bucket; only non-zero
                                             buckets, keys ascending; an empty map when
                                             no GC ran. Buckets are Firefox's exponential
                                             GC_MS buckets (low 1, high 10000, 50
                                             buckets: 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, ...,
                                             8416, 10000); see ``GC_MS_BUCKETS``.
================  =========================  ==========================================

Operating systems follow the published mix of Mozilla's telemetry hello world
(Windows_NT 105,223; Darwin 2,368; Linux 2,237 of 109,828 Firefox pings). A profile
never changes OS, so the mix is applied to profiles weighted by their ping counts; the
Firefox pings match it to within one profile's pings (a few hundredths of a percent
at the default size). Fennec pings (about 2 %) report ``Android`` on top of that.

Determinism: the output depends only on ``(pings, days, seed, end_date)`` and the
versions of numpy and pyarrow. Same arguments, same library versions => the same files
with the same bytes (no wall clock, no random file names, rows sorted inside each
file by client_id then document_id, files written in a fixed order). File
modification times are of course not reproduced.

Usage::

    python examples/generate_pings.py --out var/sample/pings
    python examples/generate_pings.py --out /tmp/pings --pings 5000 --days 3 --seed 7

or, from Python, ``generate(out_dir, pings=..., days=..., seed=..., end_date=...)``.
Needs numpy and pyarrow only; 100,000 pings take a few seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MARKER_NAME = "_generate_pings.json"
"""File written at the top of every output directory. Its presence is what allows a
later run to delete and replace that directory."""

FORMAT_VERSION = 1

PARTITION_COLUMNS = ("submission_date", "app", "channel", "version", "build_id")

SCHEMA = pa.schema(
    [
        pa.field("client_id", pa.string(), nullable=False),
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("os_name", pa.string(), nullable=False),
        pa.field("os_version", pa.string(), nullable=False),
        pa.field("architecture", pa.string(), nullable=False),
        pa.field("e10s_enabled", pa.bool_(), nullable=False),
        pa.field("addons", pa.list_(pa.string()), nullable=False),
        pa.field("session_length_s", pa.int64(), nullable=False),
        pa.field("subsession_hours", pa.float64(), nullable=False),
        pa.field("gc_ms", pa.map_(pa.int32(), pa.int32()), nullable=False),
    ]
)
"""Schema of the data columns inside every Parquet file (partition columns excluded)."""


def exponential_buckets(low: int, high: int, n_buckets: int) -> list[int]:
    """Return the lower bounds of a Firefox exponential histogram, ascending.

    Same algorithm as Firefox's ``histogram_tools.exponential_buckets``: bucket 0
    starts at 0, bucket 1 at ``low``, the last at ``high``, with roughly constant
    ratios in between (consecutive integers where the ratio would not advance).
    Returns ``n_buckets`` ints.
    """
    bounds = [0] * n_buckets
    current = low
    bounds[1] = current
    log_max = math.log(high)
    for index in range(2, n_buckets):
        log_current = math.log(current)
        log_next = log_current + (log_max - log_current) / (n_buckets - index)
        nxt = math.floor(math.exp(log_next) + 0.5)
        current = nxt if nxt > current else current + 1
        bounds[index] = current
    return bounds


GC_MS_BUCKETS = np.array(exponential_buckets(1, 10_000, 50), dtype=np.int32)
"""Lower bounds, in milliseconds, of the 50 GC_MS buckets (0, 1, ..., 10000)."""

# Published OS mix of the original hello world (Firefox pings).
OS_MIX = (("Windows_NT", 105_223), ("Darwin", 2_368), ("Linux", 2_237))

# Per OS: (os_version choices, weights), (architecture choices, weights).
OS_DETAILS = {
    "Windows_NT": (
        (
            ("10.0", "6.1", "6.3", "6.2", "5.1", "6.0"),
            (0.42, 0.40, 0.08, 0.03, 0.05, 0.02),
        ),
        (("x86", "x86-64"), (0.75, 0.25)),
    ),
    "Darwin": (
        (
            ("16.4.0", "16.3.0", "15.6.0", "14.5.0", "13.4.0"),
            (0.35, 0.20, 0.25, 0.12, 0.08),
        ),
        (("x86-64",), (1.0,)),
    ),
    "Linux": (
        (
            ("4.4.0", "4.8.0", "4.9.0", "4.10.1", "3.16.0"),
            (0.35, 0.20, 0.20, 0.10, 0.15),
        ),
        (("x86-64", "x86"), (0.92, 0.08)),
    ),
    "Android": (
        (("25", "24", "23", "22", "21", "19"), (0.05, 0.20, 0.35, 0.20, 0.10, 0.10)),
        (("arm", "x86"), (0.95, 0.05)),
    ),
}

APP_FENNEC_SHARE = 0.02
CHANNELS = ("release", "beta", "aurora", "nightly")
CHANNEL_WEIGHTS = {
    "Firefox": (0.70, 0.16, 0.05, 0.09),
    "Fennec": (0.85, 0.15, 0.0, 0.0),
}
# Probability that a profile runs with e10s, by channel (before the add-on penalty).
E10S_RATE = {"release": 0.60, "beta": 0.80, "aurora": 0.90, "nightly": 0.95}

# The build catalogue: (channel, version, build day relative to the first day of the
# window, time of day "hhmmss", base weight). Every channel has at least one build
# before the window so every ping has a candidate. Pre-release channels also get
# builds inside the window; a newer build gradually takes over (see _pick_builds).
BUILDS = (
    ("release", "51.0.1", -18, "031607", 0.62),
    ("release", "51.0", -40, "164002", 0.23),
    ("release", "50.1.0", -75, "021542", 0.15),
    ("beta", "52.0", -12, "004005", 1.0),
    ("beta", "52.0", -5, "185006", 1.0),
    ("beta", "52.0", 2, "131547", 1.0),
    ("beta", "52.0", 9, "163302", 1.0),
    ("aurora", "53.0a2", -4, "004006", 1.0),
    ("aurora", "53.0a2", 3, "004011", 1.0),
    ("aurora", "53.0a2", 10, "004007", 1.0),
    ("nightly", "54.0a1", -2, "030204", 1.0),
    ("nightly", "54.0a1", 1, "030212", 1.0),
    ("nightly", "54.0a1", 4, "110130", 1.0),
    ("nightly", "54.0a1", 8, "030207", 1.0),
    ("nightly", "54.0a1", 11, "030209", 1.0),
)
# Days for a new pre-release build to reach full adoption, and the weight kept by a
# build for each newer build already available.
ADOPTION_DAYS = {"release": 1, "beta": 3, "aurora": 2, "nightly": 1}
SUPERSEDED_FACTOR = 0.3

# Add-on catalogue with popularity weights (real add-on ids of that era).
ADDONS = (
    ("uBlock0@raymondhill.net", 10.0),
    ("{d10d0bf8-f5b5-c8b4-a8b2-2b9879e08c5d}", 9.0),  # Adblock Plus
    ("firefox@ghostery.com", 3.0),
    ("https-everywhere@eff.org", 3.0),
    ("jid1-MnnxcxisBPnSXQ@jetpack", 2.0),  # Privacy Badger
    ("{73a6fe31-595d-460b-a920-fcc0f8843232}", 2.5),  # NoScript
    ("{b9db16a4-6edc-47ec-a1f4-b86292ed211d}", 2.5),  # Video DownloadHelper
    ("{e4a8a97b-f2ed-450b-b12d-ee082ba24781}", 1.5),  # Greasemonkey
    ("{446900e4-71c2-419f-a6a7-df9c091e268b}", 1.5),  # Bitwarden
    ("jid1-ZAdIEUB7XOzOJw@jetpack", 1.0),  # DuckDuckGo Privacy Essentials
    ("@testpilot-addon", 0.5),
    ("{3c078156-979c-498b-8990-85f7987dd929}", 0.8),  # Tree Style Tab
    ("languagetool-webextension@languagetool.org", 0.7),
    ("firefox-hotfix@mozilla.org", 1.0),
    ("lastpass@lastpass.com", 1.5),
)
# Probability of a profile having 0, 1, ..., 6 add-ons.
ADDON_COUNT_P = (0.34, 0.26, 0.16, 0.11, 0.07, 0.04, 0.02)

SESSION_MAX_S = 7 * 24 * 3600
SUBSESSION_MAX_S = 24 * 3600


class UnsafeOutputDir(RuntimeError):
    """The output path exists but does not look like an earlier output of this script
    (or is not a directory), so it will not be deleted."""


def generate(
    out_dir: str | os.PathLike,
    pings: int = 100_000,
    days: int = 14,
    seed: int = 42,
    end_date: str = "20261115",
) -> dict:
    """Write ``pings`` synthetic main pings under ``out_dir`` and return a summary.

    ``out_dir`` may be missing (created with its parents), an empty directory, or an
    earlier output of this function (recognised by ``_generate_pings.json`` and
    containing nothing but that file and ``submission_date=*`` directories). The new
    data is written to a temporary sibling directory and swapped in at the end, so a
    failure leaves any earlier output untouched.

    Arguments: ``pings`` >= 1 rows; ``days`` >= 1 submission days ending with
    ``end_date`` (``YYYYMMDD``, included); ``seed`` >= 0 (numpy's PCG64 seed).

    Returns a dict: ``out_dir`` (absolute path), ``rows``, ``clients`` (distinct
    client_id), ``partitions`` (= Parquet files), ``bytes`` (Parquet bytes on disk),
    ``dates`` (the ``YYYYMMDD`` strings of the window, ascending; days with no ping
    have no directory), ``apps`` and ``channels`` (row counts), ``os_name`` (row
    counts) and the arguments. The same dict minus ``out_dir`` is stored in the marker.

    Raises ``TypeError`` for non-int ``pings``/``days``/``seed``, ``ValueError`` for
    out-of-range values or a malformed ``end_date``, and ``UnsafeOutputDir`` when ``out_dir``
    exists and is not a directory, or is a non-empty directory that this script did
    not write. Same arguments (and library versions) => identical bytes.
    """
    for name, value, minimum in (
        ("pings", pings, 1),
        ("days", days, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    try:
        last_day = dt.datetime.strptime(str(end_date), "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"end_date must be YYYYMMDD, got {end_date!r}") from None
    earliest_build = min(offset for _, _, offset, _, _ in BUILDS)
    try:
        first_build_day = last_day - dt.timedelta(days=days - 1 - earliest_build)
    except OverflowError:
        first_build_day = dt.date.min
    if first_build_day < dt.date(1000, 1, 1):
        raise ValueError("days reaches back before the year 1000; use fewer days")
    dates = [(last_day - dt.timedelta(days=days - 1 - i)) for i in range(days)]

    out = Path(out_dir).expanduser().resolve()
    _check_replaceable(out)

    table, partition_keys, stats = _build_pings(pings, dates, seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name is random, but it never appears in the output.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        n_bytes = _write_partitions(tmp, table, partition_keys)
        summary = {
            "format_version": FORMAT_VERSION,
            "pings": pings,
            "days": days,
            "seed": seed,
            "end_date": last_day.strftime("%Y%m%d"),
            "rows": table.num_rows,
            "clients": stats["clients"],
            "partitions": len(partition_keys),
            "bytes": n_bytes,
            "dates": [d.strftime("%Y%m%d") for d in dates],
            "apps": stats["apps"],
            "channels": stats["channels"],
            "os_name": stats["os_name"],
        }
        (tmp / MARKER_NAME).write_text(json.dumps(summary, indent=2) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out_dir": str(out), **summary}


# --------------------------------------------------------------------------- output


def _check_replaceable(out: Path) -> None:
    """Raise ``UnsafeOutputDir`` unless ``out`` is missing, empty, or our own output."""
    if not out.exists():
        if out.is_symlink():
            raise UnsafeOutputDir(f"{out} is a dangling symlink; refusing to touch it")
        return
    if not out.is_dir():
        raise UnsafeOutputDir(
            f"{out} exists and is not a directory; refusing to replace it"
        )
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if MARKER_NAME not in entries:
        raise UnsafeOutputDir(
            f"{out} is not empty and has no {MARKER_NAME}, so it was not written by "
            "generate_pings.py; refusing to delete it (choose another --out or empty it)"
        )
    foreign = [
        n for n in entries if n != MARKER_NAME and not n.startswith("submission_date=")
    ]
    if foreign:
        raise UnsafeOutputDir(
            f"{out} looks like an earlier output but also holds {foreign[:5]}; "
            "refusing to delete it (move those away first)"
        )


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` (missing, empty, or checked old output) by the directory ``tmp``.

    Two renames in the same parent, so readers see either the old or the new tree.
    Between them ``out`` is briefly missing; we accept that for sample data.
    """
    if out.exists():
        old = tmp.with_name(tmp.name + ".old")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def _write_partitions(root: Path, table: pa.Table, partition_keys: list[tuple]) -> int:
    """Write one Parquet file per partition; return the total bytes written.

    ``table`` is sorted by partition, then client_id, then document_id; its
    ``_partition`` column (int, ascending) indexes ``partition_keys``, which are tuples
    of the ``PARTITION_COLUMNS`` values. That helper column is not written.
    """
    part = table.column("_partition").to_numpy()
    data = table.drop_columns(["_partition"])
    starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
    ends = np.r_[starts[1:], len(part)]
    total = 0
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        values = partition_keys[part[start]]
        directory = root.joinpath(
            *(f"{k}={v}" for k, v in zip(PARTITION_COLUMNS, values, strict=True))
        )
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "part-00000.parquet"
        # Snappy: read everywhere (Spark, pandas, DuckDB) and fast to write.
        pq.write_table(data.slice(start, end - start), path, compression="snappy")
        total += path.stat().st_size
    return total


# ------------------------------------------------------------------------ simulation


def _uuid4_strings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return ``n`` random UUID v4 strings (numpy ``<U36``) drawn from ``rng``."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = np.empty((n, 32), dtype=np.uint8)
    nibbles[:, 0::2] = hexdigits[raw >> 4]
    nibbles[:, 1::2] = hexdigits[raw & 0x0F]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    # 8-4-4-4-12 hex digits: (position in text, position in nibbles, width).
    for dst, src, width in (
        (0, 0, 8),
        (9, 8, 4),
        (14, 12, 4),
        (19, 16, 4),
        (24, 20, 12),
    ):
        text[:, dst : dst + width] = nibbles[:, src : src + width]
    return text.view("S36").ravel().astype("U36")


def _choice(rng: np.random.Generator, options, weights, size: int) -> np.ndarray:
    """Draw ``size`` indexes into ``options`` with probabilities ``weights`` (normalised)."""
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(options), size=size, p=p / p.sum())


def _build_pings(n_pings: int, dates: list[dt.date], seed: int):
    """Simulate the pings; return ``(table, partition_keys, stats)``.

    ``table`` has the ``SCHEMA`` columns plus ``_partition`` (int32) and is sorted by
    (partition, client_id, document_id); ``partition_keys[i]`` is the tuple of partition
    values of partition ``i``; ``stats`` holds small counters for the summary.
    The draw order from ``rng`` is fixed, which is what makes the output reproducible.
    """
    rng = np.random.default_rng(seed)
    n_days = len(dates)

    # Profiles: each gets one ping, the rest go to profiles by a skewed activity.
    n_clients = max(1, n_pings // 4)
    activity = rng.gamma(0.6, size=n_clients)
    pings_per_client = 1 + rng.multinomial(
        n_pings - n_clients, activity / activity.sum()
    )
    client_ids = _uuid4_strings(rng, n_clients)

    is_fennec = rng.random(n_clients) < APP_FENNEC_SHARE
    apps = np.array(["Firefox", "Fennec"])
    client_app = is_fennec.astype(np.int8)
    client_channel = np.empty(n_clients, dtype=np.int8)
    for app_code, app in enumerate(apps):
        mask = client_app == app_code
        client_channel[mask] = _choice(
            rng, CHANNELS, CHANNEL_WEIGHTS[app], int(mask.sum())
        )

    # OS: Firefox profiles in random order, laid end to end by ping count, cut at the
    # cumulative shares of OS_MIX (systematic sampling), so that ping shares match the
    # published mix to within one profile's pings. Fennec profiles are Android.
    os_names = np.array([name for name, _ in OS_MIX] + ["Android"])
    client_os = np.full(n_clients, len(OS_MIX), dtype=np.int8)
    desktop = rng.permutation(np.flatnonzero(client_app == 0))
    if len(desktop):
        weights = pings_per_client[desktop]
        mid = (np.cumsum(weights) - weights / 2) / weights.sum()
        shares = np.cumsum([count for _, count in OS_MIX]) / sum(c for _, c in OS_MIX)
        client_os[desktop] = np.minimum(np.searchsorted(shares, mid), len(OS_MIX) - 1)

    client_os_version = np.empty(n_clients, dtype=object)
    client_arch = np.empty(n_clients, dtype=object)
    for os_code, os_name in enumerate(os_names):
        mask = client_os == os_code
        (versions, v_weights), (archs, a_weights) = OS_DETAILS[os_name]
        count = int(mask.sum())
        client_os_version[mask] = np.array(versions, dtype=object)[
            _choice(rng, versions, v_weights, count)
        ]
        client_arch[mask] = np.array(archs, dtype=object)[
            _choice(rng, archs, a_weights, count)
        ]

    # Add-ons: 0..6 per profile, without replacement, weighted by popularity
    # (Gumbel top-k: the k largest of log(weight) + Gumbel noise). Fennec: at most 2.
    n_addons = rng.choice(len(ADDON_COUNT_P), size=n_clients, p=ADDON_COUNT_P)
    n_addons[client_app == 1] = np.minimum(n_addons[client_app == 1], 2)
    addon_weights = np.array([w for _, w in ADDONS])
    keys = np.log(addon_weights) + rng.gumbel(size=(n_clients, len(ADDONS)))
    ranked = np.argsort(-keys, axis=1, kind="stable")  # catalogue indexes, best first
    # Keep the first n_addons of each row, re-expressed as ranks in name order and
    # sorted, so every profile's list is sorted by add-on id.
    names_sorted = sorted(name for name, _ in ADDONS)
    name_rank = np.array([names_sorted.index(name) for name, _ in ADDONS])
    take = np.arange(len(ADDONS)) < n_addons[:, None]
    picked = np.where(take, name_rank[ranked], len(ADDONS))
    picked.sort(axis=1)
    client_addons = pa.ListArray.from_arrays(
        pa.array(np.r_[0, np.cumsum(n_addons)], pa.int32()),
        pa.array(np.array(names_sorted, dtype=object)[picked[take]], pa.string()),
    )

    # e10s: a property of the profile; many legacy add-ons kept it off in that era.
    e10s_p = np.array([E10S_RATE[c] for c in CHANNELS])[client_channel] * np.where(
        n_addons >= 3, 0.6, 1.0
    )
    client_e10s = (rng.random(n_clients) < e10s_p) & (client_app == 0)
    # Machine speed: scales every GC duration of the profile.
    client_gc_factor = rng.lognormal(0.0, 0.4, size=n_clients)

    # Pings: owner, day (weekends a bit quieter), build.
    owner = np.repeat(np.arange(n_clients), pings_per_client)
    day_weights = np.array([0.8 if d.weekday() >= 5 else 1.0 for d in dates])
    day = rng.choice(n_days, size=n_pings, p=day_weights / day_weights.sum())
    channel = client_channel[owner]
    build = _pick_builds(rng, channel, day, n_days)
    document_ids = _uuid4_strings(rng, n_pings)

    # Session lengths (seconds) and the subsession this ping closes (<= 24 h).
    session_s = np.clip(
        np.rint(rng.lognormal(np.log(40 * 60), 1.3, size=n_pings)), 1, SESSION_MAX_S
    ).astype(np.int64)
    whole = rng.random(n_pings) < 0.6
    fraction = np.where(whole, 1.0, rng.uniform(0.05, 1.0, size=n_pings))
    subsession_s = np.maximum(
        1, np.floor(np.minimum(session_s, SUBSESSION_MAX_S) * fraction)
    )
    subsession_hours = subsession_s / 3600.0

    # Sort: partition (day, app, channel, build), then client_id, then document_id.
    build_names = [
        (v, _build_id(dates[0], offset, hhmmss)) for _, v, offset, hhmmss, _ in BUILDS
    ]
    build_rank = _string_ranks(np.array([f"{v}/{b}" for v, b in build_names]))
    client_rank = _string_ranks(client_ids)
    order = np.lexsort(
        (
            _string_ranks(document_ids),
            client_rank[owner],
            build_rank[build],
            channel,
            client_app[owner],
            day,
        )
    )
    owner, day, build, channel = owner[order], day[order], build[order], channel[order]
    document_ids, session_s, subsession_s = (
        document_ids[order],
        session_s[order],
        subsession_s[order],
    )
    subsession_hours = subsession_hours[order]

    gc_ms = _gc_histograms(rng, subsession_s, client_gc_factor[owner])

    # Partition index: consecutive ids in sorted order.
    combo = (
        (day.astype(np.int64) * 2 + client_app[owner]) * len(CHANNELS) + channel
    ) * len(BUILDS) + build_rank[build]
    new_part = np.r_[True, combo[1:] != combo[:-1]]
    partition = np.cumsum(new_part).astype(np.int32) - 1
    firsts = np.flatnonzero(new_part)
    partition_keys = [
        (
            dates[day[i]].strftime("%Y%m%d"),
            apps[client_app[owner[i]]],
            CHANNELS[channel[i]],
            build_names[build[i]][0],
            build_names[build[i]][1],
        )
        for i in firsts.tolist()
    ]

    table = pa.table(
        {
            "client_id": pa.array(client_ids[owner], pa.string()),
            "document_id": pa.array(document_ids, pa.string()),
            "os_name": pa.array(os_names[client_os[owner]], pa.string()),
            "os_version": pa.array(client_os_version[owner], pa.string()),
            "architecture": pa.array(client_arch[owner], pa.string()),
            "e10s_enabled": pa.array(client_e10s[owner], pa.bool_()),
            "addons": client_addons.take(pa.array(owner)),
            "session_length_s": pa.array(session_s, pa.int64()),
            "subsession_hours": pa.array(subsession_hours, pa.float64()),
            "gc_ms": gc_ms,
        },
        schema=SCHEMA,
    ).append_column("_partition", pa.array(partition, pa.int32()))

    def counts(labels: np.ndarray) -> dict:
        values, n = np.unique(labels, return_counts=True)
        return {str(v): int(c) for v, c in zip(values, n, strict=True)}

    stats = {
        "clients": n_clients,
        "apps": counts(apps[client_app[owner]]),
        "channels": counts(np.array(CHANNELS)[channel]),
        "os_name": counts(os_names[client_os[owner]]),
    }
    return table, partition_keys, stats


def _string_ranks(values: np.ndarray) -> np.ndarray:
    """Return each string's rank (0-based, ascending code-point order) as an int array."""
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def _build_id(first_day: dt.date, offset_days: int, hhmmss: str) -> str:
    """Return the ``YYYYMMDDhhmmss`` build id of a build made ``offset_days`` after
    ``first_day`` (negative: before) at ``hhmmss`` UTC."""
    return (first_day + dt.timedelta(days=offset_days)).strftime("%Y%m%d") + hhmmss


def _pick_builds(
    rng: np.random.Generator, channel: np.ndarray, day: np.ndarray, n_days: int
) -> np.ndarray:
    """Return, per ping, an index into ``BUILDS`` for its channel and submission day.

    Only builds made on or before the ping's day are candidates. A build's weight is
    its base weight, times ``SUPERSEDED_FACTOR`` per newer candidate, times its
    adoption ramp (age + 1) / ``ADOPTION_DAYS`` capped at 1.
    """
    build = np.empty(len(channel), dtype=np.int64)
    for channel_code, channel_name in enumerate(CHANNELS):
        catalogue = [(i, b) for i, b in enumerate(BUILDS) if b[0] == channel_name]
        for d in range(n_days):
            mask = (channel == channel_code) & (day == d)
            count = int(mask.sum())
            if not count:
                continue
            available = [
                (i, offset, weight)
                for i, (_, _, offset, _, weight) in catalogue
                if offset <= d
            ]
            weights = [
                weight
                * SUPERSEDED_FACTOR
                ** sum(1 for _, other, _ in available if other > offset)
                * min(1.0, (d - offset + 1) / ADOPTION_DAYS[channel_name])
                for _, offset, weight in available
            ]
            picks = _choice(rng, available, weights, count)
            build[mask] = np.array([i for i, _, _ in available])[picks]
    return build


def _gc_histograms(
    rng: np.random.Generator, subsession_s: np.ndarray, speed: np.ndarray
) -> pa.MapArray:
    """Return one sparse GC_MS histogram per ping as a ``map<int32, int32>`` array.

    About one garbage collection per two minutes of subsession (Poisson, at most
    5,000); durations are log-normal with a 25 ms median scaled by the profile's
    ``speed`` factor, truncated to whole milliseconds and counted in ``GC_MS_BUCKETS``
    (values of 10,000 ms and more land in the last bucket, like Firefox's overflow).
    """
    n = len(subsession_s)
    n_gc = np.minimum(rng.poisson(subsession_s / 120.0), 5_000)
    log_median = np.repeat(np.log(25.0 * speed), n_gc)
    duration_ms = np.floor(rng.lognormal(log_median, 1.0)).astype(np.int64)
    bucket = np.searchsorted(GC_MS_BUCKETS, duration_ms, side="right") - 1
    ping = np.repeat(np.arange(n, dtype=np.int64), n_gc)
    cells, counts = np.unique(ping * len(GC_MS_BUCKETS) + bucket, return_counts=True)
    rows, cols = np.divmod(cells, len(GC_MS_BUCKETS))
    offsets = np.r_[0, np.cumsum(np.bincount(rows, minlength=n))]
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.array(GC_MS_BUCKETS[cols], pa.int32()),
        pa.array(counts, pa.int32()),
    )


# ------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print the summary as JSON; exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        description="Write a deterministic sample of Firefox-style telemetry main pings "
        "as Hive-partitioned Parquet (see the module docstring for the schema)."
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output directory (replaced if it is an earlier output)",
    )
    parser.add_argument(
        "--pings", type=int, default=100_000, help="number of pings (default 100000)"
    )
    parser.add_argument(
        "--days",
        type=int,
        default=14,
        help="submission days ending with --end-date (default 14)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--end-date",
        default="20261115",
        help="last submission day, YYYYMMDD (default 20261115)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        summary = generate(
            args.out,
            pings=args.pings,
            days=args.days,
            seed=args.seed,
            end_date=args.end_date,
        )
    except (ValueError, UnsafeOutputDir) as exc:
        parser.error(str(exc))
    elapsed = time.perf_counter() - started
    json.dump(summary, sys.stdout, indent=2)
    print()
    print(
        f"wrote {summary['rows']:,} pings in {summary['partitions']} files in {elapsed:.2f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
