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
string because ``51.0.1`` is not a number (but a read of the beta channel alone would
make ``52.0`` a double). The portal's ``telemetry.Pings`` always gives them as strings.

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
                                             sorted; an empty list when none (Fennec:
                                             at most 2). See "Add-ons" below.
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
addon_names       list<string> (not null)    the add-ons' display names, aligned with
                                             ``addons`` (same length, same order).
simple_measures_  map<int32, int32>          the browser's uptime (= the session length)
uptime            (not null)                 in whole minutes as a one-entry histogram
                                             ``{bucket lower bound: 1}``; exponential
                                             buckets, low 1, high 10080 (7 days), 40
                                             buckets: 0, 1, 2, 3, 4, 5, 6, 8, 10, ...,
                                             8066, 10080; see ``UPTIME_BUCKETS``. Summing
                                             the maps of many pings gives the uptime
                                             histogram of the population.
hangs             list<struct<               main-thread hangs of the parent process
                    stack: list<string>,     during the subsession, in no particular
                    duration_ms: int32>>     order; an empty list when none. ``stack``:
                  (not null; fields not      frame names, outermost first (``wmain`` or
                  null)                      ``main`` ... ``nsThread::ProcessNextEvent``
                                             ... the frame that hung, last).
                                             ``duration_ms``: whole milliseconds,
                                             501 .. 600000. See "Hangs" below.
================  =========================  ==========================================

Add-ons: each profile with add-ons belongs to one community (``ADDON_COMMUNITIES``:
privacy 40 %, web-development 12 %, media 22 %, productivity 26 % of profiles) and
draws its add-ons without replacement by popularity, with the weights of its own
community's add-ons multiplied by ``COMMUNITY_BOOST`` (25): about four in five of its
add-ons come from its community, so add-ons of one community co-occur. Communities
(``ADDONS``): privacy = uBlock Origin, Privacy Badger, HTTPS Everywhere, Ghostery,
NoScript; web-development = Firebug, Web Developer, ColorZilla, JSONView, React
Developer Tools; media = Video DownloadHelper, Flashblock, Enhancer for YouTube,
Greasemonkey; productivity = Tree Style Tab, OneTab, LastPass, Bitwarden,
LanguageTool; and "general" add-ons of no community (Adblock Plus, DuckDuckGo Privacy
Essentials, Firefox Hotfix, Test Pilot). The community itself is not in the data (it
is the thing to discover); the marker lists the communities' add-on names.

Hangs: per ping, Poisson with mean 0.8 x subsession hours x the profile's jank (a
log-normal profile factor that grows with its GC slowness; x 0.7 with e10s), the rate
gamma-mixed per ping, so counts have a long tail (most pings none, a few hundreds);
longer sessions therefore report more hangs. The hangs imitate a published analysis of
Firefox's hang reports (``examples/hangs_by_last_frame.ipynb`` compares with it): a
hang is the main thread busy for more than 500 ms, so every duration is 501 ms + a
Lomax(1.3) excess of median 900 ms (median hang 1.4 s, long tail, capped at 10
minutes), drawn independently of the stack. Stacks are drawn independently per hang,
with the same weights on every desktop OS. By last frame, ten frames hold the
document's shares of all hangs: ``PresShell::DoReflow`` 5 %,
``nsCycleCollector::collectSlice`` 4.5 %, ``nsJSContext::GarbageCollectNow`` 3 %,
``IPDL::PPluginInstance::SendPBrowserStreamConstructor`` 3 %, ``(chrome script)`` 3 %,
``filterStorage.js`` 2.7 %, ``nsStyleSet::FileRules`` 2.7 %,
``IPDL::PPluginInstance::SendNPP_Destroy`` 2 %,
``IPDL::PPluginScriptableObject::SendHasProperty`` 2 % and
``IPDL::PPluginScriptableObject::SendInvoke`` 1.7 %; about 310 more last frames form a
long tail (each at most about 1 %): layout, paint, style, script files, DOM, GC, network,
storage, IPC and widget frames, and plugin frames such as
``mozilla::plugins::PluginInstanceParent::CallNPP_HandleEvent``. Plugin stacks (a frame
contains ``Plugin``) are 15 % of desktop hangs; Android has none (its other stacks share
their weight). See ``HANG_HEAD``, ``HANG_TAIL_AREAS`` and ``hang_stack_catalogue``.

Operating systems follow the published mix of Mozilla's telemetry hello world
(Windows_NT 105,223; Darwin 2,368; Linux 2,237 of 109,828 Firefox pings). A profile
never changes OS, so the mix is applied to profiles weighted by their ping counts; the
Firefox pings match it to within one profile's pings (a few hundredths of a percent
at the default size). Fennec pings (about 2 %) report ``Android`` on top of that.

Raw JSON export (``generate(..., json_dir=DIR)``, CLI ``--json [DIR]``): the same rows
as newline-delimited JSON, one file per submission day, for comparing raw-data reads
with Parquet batch views::

    DIR/
      _generate_pings_json.json     marker + summary
      pings-20261102.json           one JSON object per line, Parquet row order

Each object has the partition columns first, as strings (``"submission_date":
"20261102"``, ``"build_id": "20261016031607"``), then the data columns above; the maps
``gc_ms`` and ``simple_measures_uptime`` are objects keyed by the bucket as a string
(``{"1": 3, "24": 1}``), ``hangs`` a list of ``{"stack": [...], "duration_ms": n}``.
About 1.07 KB per ping, uncompressed (107 MB for 100,000 pings), 7.4-8.5 times the
same rows and columns as uncompressed Parquet. ``examples/batch_view.ipynb`` compares
the two; a query's speed-up over Parquet shows from millions of pings (10x from about
3,000,000 here: ``bench/batch_view.py``; the sample is built in memory, and that
benchmark's process peaked at 10 GB for 4,000,000 pings). Spark: ``spark.read.json(DIR)``
infers the maps as structs; give a schema to get maps, e.g. ``"... gc_ms MAP<STRING, INT>, hangs
ARRAY<STRUCT<stack: ARRAY<STRING>, duration_ms: INT>> ..."``.

Talos series (``generate_talos(out_dir, seed=..., days=..., end_date=...)``, CLI
``--talos [DIR]``): Talos-like performance results, 40 tests x 6 platforms (240
series), a few runs a day over ``days`` (120) days, each series with one noise pattern
(gaussian, bimodal, heavy-tailed outliers or slow drift) and 0-2 step shifts
(regressions and improvements, 1-8 standard deviations) injected at recorded pushes;
``DIR/part-00000.parquet`` (columns ``test``, ``platform``, ``date``, ``push``,
``value``) and the ground truth ``DIR/_shifts.json`` (where and how big each shift is)
and ``DIR/_series.json`` (each series' pattern). See ``generate_talos``.

Determinism: the output depends only on ``(pings, days, seed, end_date)`` and the
versions of numpy and pyarrow (the Talos output on ``(seed, days, end_date)``). Same
arguments, same library versions => the same files with the same bytes (no wall
clock, no random file names, rows sorted inside each file by client_id then
document_id, files written in a fixed order). File modification times are of course
not reproduced.

Usage (``python -m telemetry.sample`` is the same command)::

    python examples/generate_pings.py --out var/sample/pings
    python examples/generate_pings.py --out /tmp/pings --pings 5000 --days 3 --seed 7
    python examples/generate_pings.py --out var/sample/pings --json --talos
        # also var/sample/pings_json/ and var/sample/talos/

or, from Python, ``from telemetry import sample``, then ``sample.generate(out_dir,
pings=..., days=..., seed=..., end_date=..., json_dir=None)`` and
``sample.generate_talos(out_dir, seed=..., days=..., end_date=...)``.
Needs numpy and pyarrow only; 100,000 pings take a few seconds (the JSON export a few
more).
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

JSON_MARKER_NAME = "_generate_pings_json.json"
"""Marker file of a raw JSON export (``generate(..., json_dir=...)``)."""

TALOS_MARKER_NAME = "_generate_talos.json"
"""Marker file of a Talos output (``generate_talos``)."""

TALOS_SHIFTS_NAME = "_shifts.json"
"""Ground truth of the Talos output: the injected shifts."""

FORMAT_VERSION = 2

PARTITION_COLUMNS = ("submission_date", "app", "channel", "version", "build_id")

HANG_TYPE = pa.struct(
    [
        pa.field("stack", pa.list_(pa.string()), nullable=False),
        pa.field("duration_ms", pa.int32(), nullable=False),
    ]
)
"""One main-thread hang: its stack (frame names, outermost first) and duration."""

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
        pa.field("addon_names", pa.list_(pa.string()), nullable=False),
        pa.field("simple_measures_uptime", pa.map_(pa.int32(), pa.int32()), nullable=False),
        pa.field("hangs", pa.list_(HANG_TYPE), nullable=False),
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

# Add-on catalogue: (id, name, community, popularity weight); real add-on ids of that
# era. Every profile with add-ons belongs to one of ADDON_COMMUNITIES and draws its
# add-ons mostly from that community (weights times COMMUNITY_BOOST); "general" add-ons
# belong to no community and are drawn by popularity alone.
ADDONS = (
    # privacy
    ("uBlock0@raymondhill.net", "uBlock Origin", "privacy", 10.0),
    ("jid1-MnnxcxisBPnSXQ@jetpack", "Privacy Badger", "privacy", 4.0),
    ("https-everywhere@eff.org", "HTTPS Everywhere", "privacy", 5.0),
    ("firefox@ghostery.com", "Ghostery", "privacy", 4.0),
    ("{73a6fe31-595d-460b-a920-fcc0f8843232}", "NoScript", "privacy", 3.0),
    # web development
    ("firebug@software.joehewitt.com", "Firebug", "web-development", 4.0),
    ("{c45c406e-ab73-11d8-be73-000a95be3b12}", "Web Developer", "web-development", 3.0),
    ("{6AC85730-7D0F-4de0-B3FA-21142DD85326}", "ColorZilla", "web-development", 2.5),
    ("jsonview@brh.numbera.com", "JSONView", "web-development", 2.0),
    ("@react-devtools", "React Developer Tools", "web-development", 1.5),
    # media: video downloads and players
    ("{b9db16a4-6edc-47ec-a1f4-b86292ed211d}", "Video DownloadHelper", "media", 5.0),
    ("{3d7eb24f-2740-49df-8937-200b1cc08f8a}", "Flashblock", "media", 2.5),
    ("enhancerforyoutube@maximerf.addons.mozilla.org", "Enhancer for YouTube", "media", 2.5),
    ("{e4a8a97b-f2ed-450b-b12d-ee082ba24781}", "Greasemonkey", "media", 1.5),
    # productivity: tabs, passwords, writing
    ("{3c078156-979c-498b-8990-85f7987dd929}", "Tree Style Tab", "productivity", 2.0),
    ("extension@one-tab.com", "OneTab", "productivity", 2.0),
    ("lastpass@lastpass.com", "LastPass", "productivity", 3.0),
    ("{446900e4-71c2-419f-a6a7-df9c091e268b}", "Bitwarden", "productivity", 1.5),
    ("languagetool-webextension@languagetool.org", "LanguageTool", "productivity", 1.5),
    # general: no community
    ("{d10d0bf8-f5b5-c8b4-a8b2-2b9879e08c5d}", "Adblock Plus", "general", 9.0),
    ("jid1-ZAdIEUB7XOzOJw@jetpack", "DuckDuckGo Privacy Essentials", "general", 1.0),
    ("firefox-hotfix@mozilla.org", "Firefox Hotfix", "general", 1.0),
    ("@testpilot-addon", "Test Pilot", "general", 0.5),
)
# Communities a profile can belong to, with the share of profiles in each.
ADDON_COMMUNITIES = (
    ("privacy", 0.40),
    ("web-development", 0.12),
    ("media", 0.22),
    ("productivity", 0.26),
)
# Weight multiplier of the add-ons of a profile's own community: about four in five of
# a profile's add-ons come from its community.
COMMUNITY_BOOST = 25.0
# Probability of a profile having 0, 1, ..., 6 add-ons.
ADDON_COUNT_P = (0.34, 0.26, 0.16, 0.11, 0.07, 0.04, 0.02)

SESSION_MAX_S = 7 * 24 * 3600
SUBSESSION_MAX_S = 24 * 3600

UPTIME_BUCKETS = np.array(exponential_buckets(1, 10_080, 40), dtype=np.int32)
"""Lower bounds, in minutes, of the 40 buckets of ``simple_measures_uptime``
(0, 1, 2, ..., 8066, 10080; 10,080 minutes = 7 days)."""

# --- Main-thread hangs (background hang reporter style) ---------------------------
# Calibrated on a published analysis of Firefox's hang reports, the source document of
# examples/hangs_by_last_frame.ipynb: a hang is the main thread running one task for
# more than 500 ms; clustered by last frame, the ten most frequent frames hold 5, 4.5,
# 3, 3, 3, 2.7, 2.7, 2, 2 and 1.7 % of all stacks, then a very long tail; about 15 % of
# hangs are plugin-related, and plugin hangs last as long as the others (medians
# between 1 and 2 s).
# A hang's stack is the OS's event-loop prefix followed by one of HANG_SUFFIXES; both
# are outermost frame first, so the last frame is where the main thread was stuck.
_EVENT_LOOP = (
    "XRE_main",
    "XREMain::XRE_main",
    "XREMain::XRE_mainRun",
    "nsAppStartup::Run",
    "nsAppShell::Run",
)
HANG_PREFIXES = {
    "Windows_NT": ("wmain", "NS_internal_main", "do_main")
    + _EVENT_LOOP
    + (
        "MessageLoop::Run",
        "MessageLoop::RunHandler",
        "base::MessagePumpForUI::DoRunLoop",
        "MessageLoop::DoWork",
        "nsThread::ProcessNextEvent",
    ),
    "Darwin": ("main", "do_main")
    + _EVENT_LOOP
    + (
        "-[NSApplication run]",
        "-[GeckoNSApplication nextEventMatchingMask:untilDate:inMode:dequeue:]",
        "__CFRunLoopRun",
        "nsAppShell::ProcessGeckoEvents",
        "NS_ProcessPendingEvents",
        "nsThread::ProcessNextEvent",
    ),
    "Linux": ("main", "do_main")
    + _EVENT_LOOP
    + (
        "MessageLoop::Run",
        "MessageLoop::RunHandler",
        "mozilla::ipc::MessagePump::Run",
        "NS_ProcessNextEvent",
        "nsThread::ProcessNextEvent",
    ),
    "Android": ("Java_org_mozilla_gecko_mozglue_GeckoLoader_nativeRun", "GeckoStart")
    + _EVENT_LOOP
    + (
        "MessageLoop::Run",
        "MessageLoop::RunHandler",
        "mozilla::ipc::MessagePump::Run",
        "NS_ProcessNextEvent",
        "nsThread::ProcessNextEvent",
    ),
}
# The document's ten most frequent last frames, with their share of all hang stacks in
# percent: (category, share, frames after the prefix, outermost first). A frame reached
# by two paths has two entries that split its share.
HANG_HEAD = (
    (
        "reflow",
        2.5,
        (
            "nsRefreshDriver::Tick",
            "PresShell::FlushPendingNotifications",
            "PresShell::ProcessReflowCommands",
            "PresShell::DoReflow",
        ),
    ),
    (
        "reflow",
        2.5,
        (
            "nsTimerImpl::Fire",
            "js::RunScript",
            "js::Interpret",
            "mozilla::dom::ElementBinding::get_clientHeight",
            "nsIDocument::FlushPendingNotifications",
            "PresShell::FlushPendingNotifications",
            "PresShell::DoReflow",
        ),
    ),
    (
        "cycle_collection",
        3.0,
        (
            "nsTimerImpl::Fire",
            "CCTimerFired",
            "nsJSContext::RunCycleCollectorSlice",
            "nsCycleCollector_collectSlice",
            "nsCycleCollector::collectSlice",
        ),
    ),
    (
        "cycle_collection",
        1.5,
        (
            "nsObserverService::NotifyObservers",
            "nsJSEnvironmentObserver::Observe",
            "nsJSContext::CycleCollectNow",
            "nsCycleCollector_collect",
            "nsCycleCollector::collectSlice",
        ),
    ),
    ("gc", 3.0, ("nsTimerImpl::Fire", "GCTimerFired", "nsJSContext::GarbageCollectNow")),
    (
        "plugin",
        3.0,
        (
            "nsPluginStreamListenerPeer::OnStartRequest",
            "nsNPAPIPluginStreamListener::OnStartBinding",
            "mozilla::plugins::PluginInstanceParent::NPP_NewStream",
            "IPDL::PPluginInstance::SendPBrowserStreamConstructor",
        ),
    ),
    (
        "script",
        3.0,
        (
            "mozilla::EventDispatcher::Dispatch",
            "mozilla::EventListenerManager::HandleEventInternal",
            "js::RunScript",
            "(chrome script)",
        ),
    ),
    ("script", 2.7, ("nsTimerImpl::Fire", "js::RunScript", "filterStorage.js")),
    (
        "style",
        2.7,
        (
            "nsRefreshDriver::Tick",
            "PresShell::FlushPendingNotifications",
            "mozilla::RestyleManager::ProcessPendingRestyles",
            "nsStyleSet::ResolveStyleFor",
            "nsStyleSet::FileRules",
        ),
    ),
    (
        "plugin",
        2.0,
        (
            "nsObjectLoadingContent::StopPluginInstance",
            "nsNPAPIPluginInstance::Stop",
            "mozilla::plugins::PluginModuleParent::NPP_Destroy",
            "IPDL::PPluginInstance::SendNPP_Destroy",
        ),
    ),
    (
        "plugin",
        2.0,
        (
            "js::RunScript",
            "js::Interpret",
            "mozilla::plugins::PluginScriptableObjectParent::ScriptableHasProperty",
            "IPDL::PPluginScriptableObject::SendHasProperty",
        ),
    ),
    (
        "plugin",
        1.7,
        (
            "js::RunScript",
            "js::Interpret",
            "mozilla::plugins::PluginScriptableObjectParent::ScriptableInvoke",
            "IPDL::PPluginScriptableObject::SendInvoke",
        ),
    ),
)
# The long tail, by area: (category, caller frames after the prefix, last frames). A
# last frame is written "Class::method" or, for several methods of one class, "Class::
# method method ..."; a plugin area's stacks all have a frame naming a plugin, the
# others none. Last frames are unique across areas.
HANG_TAIL_AREAS = (
    (
        "plugin",
        ("mozilla::EventDispatcher::Dispatch", "nsPluginInstanceOwner::ProcessEvent"),
        (
            "mozilla::plugins::PluginInstanceParent::CallNPP_HandleEvent",
            "mozilla::plugins::PluginModuleChromeParent::LoadModule",
            "mozilla::plugins::PluginInstanceParent::CallNPP_SetWindow",
            "IPDL::PPluginInstance::SendAsyncSetWindow SendUpdateBackground"
            " SendPPluginScriptableObjectConstructor SendNPP_NewStream SendNPP_SetValue"
            " CallNPP_GetValue_NPPVpluginScriptableNPObject SendWindowPosChanged",
            "IPDL::PPluginScriptableObject::SendGetParentProperty SendSetProperty"
            " SendInvokeDefault SendEnumerate SendConstruct SendHasMethod SendRemoveProperty",
            "IPDL::PPluginModule::SendPPluginInstanceConstructor SendNP_GetEntryPoints"
            " SendNPP_ClearSiteData SendNPP_GetSitesWithData SendSetAudioSessionData",
            "IPDL::PBrowserStream::SendWrite SendNPP_DestroyStream",
            "nsPluginHost::LoadPlugins FindPlugins ScanPluginsDirectory ReadPluginInfo"
            " GetPluginTags",
            "mozilla::plugins::PluginModuleParent::NPP_New NP_Initialize",
            "mozilla::plugins::PluginProcessParent::Launch",
            "mozilla::plugins::PluginModuleChromeParent::TerminateChildProcess",
            "nsNPAPIPluginInstance::GetValueFromPlugin",
            "nsObjectLoadingContent::InstantiatePluginInstance",
        ),
    ),
    (
        "reflow",
        (
            "nsRefreshDriver::Tick",
            "PresShell::FlushPendingNotifications",
            "PresShell::ProcessReflowCommands",
        ),
        (
            "nsBlockFrame::Reflow ReflowDirtyLines ReflowLine ReflowInlineFrames"
            " ComputeFinalSize PlaceLine DrainOverflowLines",
            "nsLineLayout::ReflowFrame VerticalAlignLine TextAlignLine BeginLineReflow",
            "nsTextFrame::Reflow ReflowText MeasureText GetMinISize EnsureTextRun",
            "nsFlexContainerFrame::Reflow DoFlexLayout GenerateFlexItemForChild"
            " ResolveFlexibleLengths",
            "nsGridContainerFrame::Reflow ReflowChildren",
            "nsTableFrame::Reflow ReflowTable ReflowChildren CalcBCBorders",
            "nsTableRowGroupFrame::Reflow",
            "nsHTMLScrollFrame::Reflow ReflowContents ReflowScrolledFrame",
            "nsIFrame::GetPrefISize ComputeSize",
            "nsLayoutUtils::IntrinsicForContainer GetFrameForPoint GetAllInFlowRectsUnion",
            "gfxTextRun::BreakAndMeasureText GetAdvanceWidth",
            "gfxFontGroup::MakeTextRun FindFontForChar InitTextRun",
            "gfxFont::ShapeText SplitAndInitTextRun",
            "gfxHarfBuzzShaper::ShapeText",
            "gfxDWriteFontEntry::ReadCMAP",
            "gfxPlatformFontList::SystemFindFontForChar InitOtherFamilyNames",
        ),
    ),
    (
        "paint",
        ("nsRefreshDriver::Tick", "nsViewManager::ProcessPendingUpdates", "PresShell::Paint"),
        (
            "nsLayoutUtils::PaintFrame",
            "nsDisplayList::PaintRoot ComputeVisibilityForRoot",
            "mozilla::FrameLayerBuilder::BuildContainerLayerFor DrawPaintedLayer",
            "mozilla::ContainerState::ProcessDisplayItems",
            "mozilla::layers::ClientLayerManager::EndTransaction ForwardTransaction",
            "mozilla::layers::ShadowLayerForwarder::EndTransaction",
            "IPDL::PCompositorBridge::SendFlushRendering SendGetSnapshot",
            "IPDL::PLayerTransaction::SendUpdate",
            "mozilla::gfx::DrawTargetD2D1::Flush FillGlyphs",
            "mozilla::gfx::DrawTargetSkia::DrawSurface",
            "nsDisplayBackgroundImage::Paint",
            "nsCSSRendering::PaintBackground PaintBorder PaintBoxShadowOuter",
            "imgFrame::Draw",
            "mozilla::image::RasterImage::Draw LookupFrame",
            "mozilla::layers::TextureClient::Lock",
            "gfxWindowsPlatform::UpdateRenderMode",
        ),
    ),
    (
        "style",
        (
            "nsRefreshDriver::Tick",
            "PresShell::FlushPendingNotifications",
            "mozilla::RestyleManager::ProcessPendingRestyles",
        ),
        (
            "mozilla::ElementRestyler::Restyle RestyleChildren ComputeStyleChangeFor",
            "mozilla::RestyleManager::RebuildAllStyleData ProcessRestyledFrames",
            "nsStyleSet::ResolvePseudoElementStyle GetContext",
            "nsCSSRuleProcessor::RulesMatching SelectorMatches HasStateDependentStyle"
            " RefreshRuleCascade",
            "nsRuleNode::WalkRuleTree ComputeDisplayData ComputeFontData",
            "mozilla::css::Loader::LoadSheetSync",
            "nsCSSParser::ParseSheet",
            "nsComputedDOMStyle::GetPropertyCSSValue",
        ),
    ),
    (
        "script",
        ("nsTimerImpl::Fire", "js::RunScript"),
        (
            "js::Interpret",
            "js::jit::EnterBaselineMethod",
            "browser.js",
            "tabbrowser.xml",
            "SessionStore.jsm",
            "SessionSaver.jsm",
            "PlacesUtils.jsm",
            "nsSearchService.js",
            "urlbarBindings.xml",
            "autocomplete.xml",
            "content.js",
            "ContentSearch.jsm",
            "BrowserUtils.jsm",
            "ExtensionContent.jsm",
            "Extension.jsm",
            "PageThumbs.jsm",
            "LoginManagerContent.jsm",
            "NetUtil.jsm",
            "Sqlite.jsm",
            "TelemetrySession.jsm",
            "AddonManager.jsm",
            "XPIProvider.jsm",
            "matcher.js",
            "contentPolicy.js",
            "elemHide.js",
            "(content script)",
            "js::jit::IonCompile",
            "js::jit::CodeGenerator::generate",
            "js::jit::Bailout",
            "js::frontend::CompileGlobalScript",
            "js::frontend::Parser::parse",
            "js::frontend::BytecodeEmitter::emitTree",
            "js::irregexp::CompilePattern",
            "js::RegExpShared::compile",
            "js::ParseJSONWithReviver",
            "js::str_replace",
            "js::array_sort",
            "js::XDRScript",
            "js::Debugger::onEnterFrame",
            "js::NativeObject::growSlots",
            "js::ToStringSlow",
            "js::str_split_string",
            "js::jit::InvalidateAll",
            "js::CloneFunctionObject",
            "js::Shape::search",
        ),
    ),
    (
        "dom",
        (
            "mozilla::EventDispatcher::Dispatch",
            "mozilla::EventListenerManager::HandleEventInternal",
            "js::RunScript",
        ),
        (
            "mozilla::dom::Element::GetBoundingClientRect SetInnerHTML",
            "nsINode::QuerySelectorAll ReplaceOrInsertBefore",
            "nsGenericHTMLElement::GetInnerText GetOffsetRect",
            "nsRange::GetClientRects ToString",
            "mozilla::dom::Selection::AddRange Collapse",
            "nsDocument::CreateElem GetElementsByTagName",
            "nsHTMLDocument::Open WriteCommon",
            "nsContentList::Length Item",
            "nsTextEditorState::SetValue",
            "mozilla::dom::XMLHttpRequestMainThread::Send",
            "mozilla::dom::Storage::GetItem SetItem",
            "nsFocusManager::SetFocus Focus",
            "mozilla::dom::HTMLMediaElement::Load Play",
            "nsXBLService::LoadBindings",
            "nsXBLBinding::InstallImplementation",
            "nsContentUtils::ParseFragmentHTML",
            "mozilla::dom::CanvasRenderingContext2D::GetImageData DrawImage",
            "mozilla::WebGLContext::ReadPixels",
            "nsPlainTextSerializer::AppendText",
            "mozilla::HTMLEditor::InsertHTMLWithContext",
            "mozilla::dom::MutationObserver::HandleMutation",
            "nsDOMMutationObserver::HandleMutations",
            "mozilla::dom::Promise::PerformMicroTaskCheckpoint",
            "mozilla::dom::HTMLInputElement::SetValue",
            "mozilla::dom::HTMLImageElement::LoadSelectedImage",
            "mozilla::dom::IDBTransaction::Commit",
            "mozilla::dom::Navigator::GetPlatform",
            "nsGlobalWindow::GetComputedStyle ScrollTo",
        ),
    ),
    (
        "gc",
        ("nsTimerImpl::Fire", "GCTimerFired", "JS::GCForReason"),
        (
            "js::gc::GCRuntime::incrementalCollectSlice markUntilBudgetExhausted beginMarkPhase"
            " sweepPhase endSweepPhase compactPhase decommitArenas minorGC",
            "js::Nursery::collect",
            "js::TenuringTracer::traceObject",
            "js::GCMarker::drainMarkStack",
            "nsCycleCollector::ForgetSkippable BeginCollection MarkRoots ScanRoots CollectWhite"
            " FreeSnowWhite",
            "nsCycleCollector_forgetSkippable",
            "mozilla::dom::FragmentOrElement::CanSkip",
        ),
    ),
    (
        "network",
        ("nsInputStreamPump::OnInputStreamReady", "nsInputStreamPump::OnStateTransfer"),
        (
            "mozilla::net::HttpChannelChild::OnStartRequest OnTransportAndData OnStopRequest",
            "mozilla::net::nsHttpChannel::OnStartRequest",
            "nsHtml5StreamParser::OnDataAvailable",
            "nsHtml5TreeOpExecutor::RunFlushLoop FlushDocumentWrite",
            "nsDocumentOpenInfo::OnStartRequest",
            "nsURILoader::OpenURI",
            "nsDocShell::InternalLoad CreateContentViewer",
            "nsJARChannel::AsyncOpen",
            "nsZipArchive::OpenArchive GetItem",
            "mozilla::net::nsIOService::NewChannelFromURI",
            "nsStandardURL::SetSpec",
            "mozilla::net::nsSocketTransportService::Init",
            "mozilla::net::CacheStorageService::SyncEvictAll",
            "nsPACMan::LoadPACFromURI",
        ),
    ),
    (
        "storage",
        ("nsTimerImpl::Fire", "mozilla::storage::Statement::ExecuteStep"),
        (
            "sqlite3_step",
            "sqlite3_prepare_v2",
            "sqlite3_exec",
            "sqlite3_backup_step",
            "mozilla::storage::Connection::Close ExecuteSimpleSQL Initialize",
            "nsNavHistory::GetQueryResults",
            "nsNavBookmarks::GetBookmarkIdsForURI InsertBookmark",
            "nsAnnotationService::GetItemAnnotation",
            "mozilla::places::Database::Init",
            "nsPermissionManager::Read",
            "nsCookieService::Read InitDBStates",
            "mozilla::Preferences::SavePrefFile ReadUserPrefs",
            "nsLocalFile::Exists GetFileSize CopyTo",
            "mozilla::scache::StartupCache::GetBuffer",
            "mozilla::safebrowsing::Classifier::ApplyUpdates",
            "nsUrlClassifierDBService::Lookup",
        ),
    ),
    (
        "sync_ipc",
        ("mozilla::ipc::MessageChannel::OnMaybeDequeueOne",),
        (
            "nsFrameMessageManager::ReceiveMessage",
            "IPDL::PContent::RecvSyncMessage RecvRpcMessage RecvLoadURIExternal RecvGetClipboard"
            " RecvGetSystemColors",
            "IPDL::PBrowser::RecvSyncMessage RecvSetDimensions RecvRequestFocus"
            " SendRealMouseButtonEvent SendRealKeyEvent SendUpdateDimensions",
            "IPDL::PNecko::RecvPHttpChannelConstructor",
            "IPDL::PHal::RecvGetScreenConfiguration",
            "mozilla::dom::ContentParent::RecvSyncMessage",
            "mozilla::dom::TabParent::RecvSyncMessage",
        ),
    ),
    (
        "widget",
        ("nsAppShell::ProcessNextNativeEvent",),
        (
            "nsWindow::ProcessMessage WindowProcInternal DispatchEvent",
            "mozilla::widget::IMMHandler::OnIMEComposition",
            "mozilla::widget::TSFTextStore::OnFocusChange",
            "nsClipboard::GetNativeClipboardData",
            "nsDragService::InvokeDragSession",
            "nsFilePicker::ShowFilePicker",
            "nsXULWindow::ShowModal",
            "nsPrintEngine::DoPrint",
            "nsComponentManagerImpl::CreateInstanceByContractID",
            "XPCWrappedNative::CallMethod",
            "mozilla::gfx::DeviceManagerDx::CreateContentDevices",
            "mozilla::widget::GfxInfo::Init",
            "nsSystemInfo::Init",
            "nsObserverService::NotifyObservers",
            "nsBaseDragService::DrawDrag",
            "nsSound::PlaySystemSound",
            "nsNativeThemeWin::DrawWidgetBackground",
            "mozilla::a11y::DocAccessible::ProcessInvalidationList",
            "mozilla::a11y::AccessibleWrap::get_accChild",
            "nsWindowWatcher::OpenWindowInternal",
        ),
    ),
)
HANG_PLUGIN_SHARE = 15.0  # percent of hangs whose stack names a plugin
HANG_THRESHOLD_MS = 500  # a hang runs longer than this: every duration is at least 501 ms
HANG_EXCESS_MEDIAN_MS = 900  # median time beyond the threshold: hangs' median is 1.4 s
HANG_TAIL_SHAPE = 1.3  # Lomax shape of that excess: a long tail, a few hangs last minutes
HANG_MAX_MS = 600_000  # durations are capped at 10 minutes
HANG_RATE_PER_HOUR = 0.8  # mean hangs per subsession hour of a typical profile
HANG_MAX_PER_PING = 500


def _tail_frames(spec: str) -> list[str]:
    """Expand a tail entry ``"Class::m1 m2 ..."`` to ``["Class::m1", "Class::m2", ...]``."""
    first, *others = spec.split(" ")
    owner = first.rpartition("::")[0]
    return [first] + [f"{owner}::{method}" for method in others]


def _hang_suffixes() -> tuple[tuple[str, tuple[str, ...], float], ...]:
    """Return every hang suffix as ``(category, frames, weight)``, weights in percent of
    all hangs (they sum to 100): ``HANG_HEAD`` as given, then the tail.

    The tail shares ``100 - sum(HANG_HEAD)`` so that plugin stacks total
    ``HANG_PLUGIN_SHARE`` percent: each of the two groups (plugin areas, other areas)
    gives its k-th frame (areas' frames taken in turn, each area's list in order) a
    weight proportional to ``1 / (k + offset)``, a Zipf law flattened at the top so that
    the largest tail frame stays well below the tenth head frame.
    """
    head = tuple((category, frames, share) for category, share, frames in HANG_HEAD)
    head_plugin = sum(share for category, _, share in head if category == "plugin")
    tail_total = 100.0 - sum(share for _, _, share in head)
    tail = []
    for plugin, total, offset in (
        (True, HANG_PLUGIN_SHARE - head_plugin, 5),
        (False, tail_total - (HANG_PLUGIN_SHARE - head_plugin), 25),
    ):
        areas = [
            [(category, callers + (frame,)) for spec in specs for frame in _tail_frames(spec)]
            for category, callers, specs in HANG_TAIL_AREAS
            if (category == "plugin") == plugin
        ]
        ranked = [area[i] for i in range(max(map(len, areas))) for area in areas if i < len(area)]
        weights = 1.0 / (np.arange(1, len(ranked) + 1) + offset)
        weights *= total / weights.sum()
        tail += [(c, f, float(w)) for (c, f), w in zip(ranked, weights, strict=True)]
    return head + tuple(tail)


HANG_SUFFIXES = _hang_suffixes()
"""Every hang suffix, ``(category, frames after the prefix (outermost first), weight in
percent of all hangs)``: the document's ten most frequent last frames, then a tail of
about 300 more."""


def _checked_arguments(end_date, *ints: tuple[str, int, int]) -> dt.date:
    """Check each ``(name, value, minimum)`` is an int (not a bool) >= minimum and parse
    ``end_date`` (YYYYMMDD); return that date. Raises TypeError or ValueError naming the
    argument."""
    for name, value, minimum in ints:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    try:
        return dt.datetime.strptime(str(end_date), "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"end_date must be YYYYMMDD, got {end_date!r}") from None


class UnsafeOutputDir(RuntimeError):
    """The output path exists but does not look like an earlier output of this script
    (or is not a directory), so it will not be deleted."""


def generate(
    out_dir: str | os.PathLike,
    pings: int = 100_000,
    days: int = 14,
    seed: int = 42,
    end_date: str = "20261115",
    *,
    json_dir: str | os.PathLike | None = None,
) -> dict:
    """Write ``pings`` synthetic main pings under ``out_dir`` and return a summary.

    ``out_dir`` may be missing (created with its parents), an empty directory, or an
    earlier output of this function (recognised by ``_generate_pings.json`` and
    containing nothing but that file and ``submission_date=*`` directories). The new
    data is written to a temporary sibling directory and swapped in at the end, so a
    failure leaves any earlier output untouched.

    Arguments: ``pings`` >= 1 rows; ``days`` >= 1 submission days ending with
    ``end_date`` (``YYYYMMDD``, included); ``seed`` >= 0 (numpy's PCG64 seed).

    ``json_dir``: also write the same rows as newline-delimited JSON there (see
    "Raw JSON export" in the module docstring); it must not be ``out_dir`` or inside it
    (nor the reverse), and is replaced under the same rules as ``out_dir``, with
    ``_generate_pings_json.json`` as its marker.

    Returns a dict: ``out_dir`` (absolute path), ``rows``, ``clients`` (distinct
    client_id), ``partitions`` (= Parquet files), ``bytes`` (Parquet bytes on disk),
    ``dates`` (the ``YYYYMMDD`` strings of the window, ascending; days with no ping
    have no directory), ``apps`` and ``channels`` (row counts), ``os_name`` (row
    counts), ``hangs`` (total hangs), ``addon_communities`` (community -> add-on
    names) and the arguments. The same dict minus ``out_dir`` is stored in the marker.
    With ``json_dir``, also ``json_dir`` (absolute) and ``json_bytes``.

    Raises ``TypeError`` for non-int ``pings``/``days``/``seed``, ``ValueError`` for
    out-of-range values or a malformed ``end_date``, and ``UnsafeOutputDir`` when ``out_dir``
    exists and is not a directory, or is a non-empty directory that this script did
    not write. Same arguments (and library versions) => identical bytes.
    """
    last_day = _checked_arguments(
        end_date, ("pings", pings, 1), ("days", days, 1), ("seed", seed, 0)
    )
    earliest_build = min(offset for _, _, offset, _, _ in BUILDS)
    try:
        first_build_day = last_day - dt.timedelta(days=days - 1 - earliest_build)
    except OverflowError:
        first_build_day = dt.date.min
    if first_build_day < dt.date(1000, 1, 1):
        raise ValueError("days reaches back before the year 1000; use fewer days")
    dates = [(last_day - dt.timedelta(days=days - 1 - i)) for i in range(days)]

    out = Path(out_dir).expanduser().resolve()
    json_out = None if json_dir is None else Path(json_dir).expanduser().resolve()
    _check_apart(out_dir=out, json_dir=json_out)
    _check_replaceable(out)
    if json_out is not None:
        _check_replaceable(json_out, JSON_MARKER_NAME, lambda n: n.startswith("pings-"))

    table, partition_keys, stats = _build_pings(pings, dates, seed)
    summary = {
        "format_version": FORMAT_VERSION,
        "pings": pings,
        "days": days,
        "seed": seed,
        "end_date": last_day.strftime("%Y%m%d"),
        "rows": table.num_rows,
        "clients": stats["clients"],
        "partitions": len(partition_keys),
        "bytes": 0,
        "dates": [d.strftime("%Y%m%d") for d in dates],
        "apps": stats["apps"],
        "channels": stats["channels"],
        "os_name": stats["os_name"],
        "hangs": stats["hangs"],
        "addon_communities": {
            community: [name for _, name, c, _ in ADDONS if c == community]
            for community in [c for c, _ in ADDON_COMMUNITIES] + ["general"]
        },
    }

    def write(tmp: Path) -> None:
        summary["bytes"] = _write_partitions(tmp, table, partition_keys)
        (tmp / MARKER_NAME).write_text(json.dumps(summary, indent=2) + "\n")

    _write_atomically(out, write)
    result = {"out_dir": str(out), **summary}
    if json_out is not None:

        def write_json(tmp: Path) -> int:
            n_bytes = _write_json(tmp, table, partition_keys)
            marker = dict(summary)
            marker["json_bytes"] = n_bytes
            (tmp / JSON_MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
            return n_bytes

        result["json_bytes"] = _write_atomically(json_out, write_json)
        result["json_dir"] = str(json_out)
    return result


# --------------------------------------------------------------------------- output


def _check_replaceable(
    out: Path,
    marker: str = MARKER_NAME,
    own=lambda name: name.startswith("submission_date="),
    what: str = "generate_pings.py",
) -> None:
    """Raise ``UnsafeOutputDir`` unless ``out`` is missing, empty, or our own output:
    a directory holding ``marker`` and otherwise only entries for which ``own(name)``."""
    if not out.exists():
        if out.is_symlink():
            raise UnsafeOutputDir(f"{out} is a dangling symlink; refusing to touch it")
        return
    if not out.is_dir():
        raise UnsafeOutputDir(f"{out} exists and is not a directory; refusing to replace it")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if marker not in entries:
        raise UnsafeOutputDir(
            f"{out} is not empty and has no {marker}, so it was not written by "
            f"{what}; refusing to delete it (choose another directory or empty it)"
        )
    foreign = [n for n in entries if n != marker and not own(n)]
    if foreign:
        raise UnsafeOutputDir(
            f"{out} looks like an earlier output but also holds {foreign[:5]}; "
            "refusing to delete it (move those away first)"
        )


def _check_apart(**dirs: Path) -> None:
    """Raise ``ValueError`` when one of the output directories is, or is inside, another."""
    items = [(name, path) for name, path in dirs.items() if path is not None]
    for i, (name, path) in enumerate(items):
        for other_name, other in items[i + 1 :]:
            if path == other or path in other.parents or other in path.parents:
                raise ValueError(
                    f"{name} ({path}) and {other_name} ({other}) must be separate "
                    "directories, neither inside the other"
                )


def _write_atomically(out: Path, write) -> object:
    """Call ``write(tmp)`` on a new temporary sibling of ``out``, then swap it into
    place; on any failure remove the temporary directory and leave ``out`` untouched.
    Returns what ``write`` returned."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name is random, but it never appears in the output.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    # mkdtemp makes the directory private (0700); the sample is for every notebook's
    # sandbox to read, so give it the mode a plain mkdir would have.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        result = write(tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


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


def _write_json(root: Path, table: pa.Table, partition_keys: list[tuple]) -> int:
    """Write the pings as newline-delimited JSON, one file per submission day
    (``pings-YYYYMMDD.json``); return the total bytes written.

    Rows keep the order of the Parquet output. Each line is one JSON object with the
    partition columns first (all strings), then the data columns; maps become objects
    keyed by the bucket lower bound as a string.
    """
    part = table.column("_partition").to_numpy()
    data = table.drop_columns(["_partition"])
    map_columns = [f.name for f in SCHEMA if pa.types.is_map(f.type)]
    starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
    ends = np.r_[starts[1:], len(part)]
    total = 0
    handle = None
    current_day = None
    try:
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            values = partition_keys[part[start]]
            if values[0] != current_day:
                if handle is not None:
                    total += handle.tell()
                    handle.close()
                current_day = values[0]
                handle = open(root / f"pings-{current_day}.json", "w", encoding="utf-8")
            head = dict(zip(PARTITION_COLUMNS, values, strict=True))
            lines = []
            for row in data.slice(start, end - start).to_pylist():
                for name in map_columns:
                    row[name] = {str(k): v for k, v in row[name]}
                lines.append(json.dumps({**head, **row}, separators=(",", ":")))
            handle.write("\n".join(lines) + "\n")
    finally:
        if handle is not None:
            total += handle.tell()
            handle.close()
    return total


# ------------------------------------------------------------------------- Talos

# Talos test names (lower is better); each test's typical value is drawn per seed.
TALOS_TESTS = (
    "a11yr",
    "about_preferences_basic",
    "basic_compositor_video",
    "cart",
    "cpstartup",
    "cross_origin_pageload",
    "damp",
    "displaylist_mutate",
    "dromaeo_css",
    "dromaeo_dom",
    "glterrain",
    "glvideo",
    "kraken",
    "motionmark_animometer",
    "motionmark_htmlsuite",
    "pdfpaint",
    "perf_reftest",
    "perf_reftest_singletons",
    "rasterflood_gradient",
    "rasterflood_svg",
    "sessionrestore",
    "sessionrestore_many_windows",
    "sessionrestore_no_auto_restore",
    "startup_about_home_paint",
    "stylebench",
    "tabpaint",
    "tabswitch",
    "tart",
    "tp5n",
    "tp5o",
    "tp5o_scroll",
    "tpaint",
    "tresize",
    "ts_paint",
    "tscrollx",
    "tsvg_static",
    "tsvgr_opacity",
    "tsvgx",
    "twinopen",
    "v8_7",
)
# (platform, factor on the test's typical value)
TALOS_PLATFORMS = (
    ("linux64", 0.95),
    ("linux64-shippable", 0.9),
    ("macosx1014-64", 1.1),
    ("windows10-64", 1.0),
    ("windows10-64-shippable", 0.95),
    ("windows7-32", 1.15),
)
# Noise patterns of the series and the share of series with each (see generate_talos).
TALOS_PATTERNS = (("gaussian", 0.3), ("bimodal", 0.3), ("outliers", 0.2), ("drift", 0.2))
TALOS_SERIES_NAME = "_series.json"
"""Ground truth of the Talos output: each series' noise pattern and its parameters."""
TALOS_SCHEMA = pa.schema(
    [
        pa.field("test", pa.string(), nullable=False),
        pa.field("platform", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("push", pa.int32(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)


def generate_talos(
    out_dir: str | os.PathLike,
    seed: int = 42,
    days: int = 120,
    end_date: str = "20261115",
) -> dict:
    """Write Talos-like performance series, with shifts injected at recorded pushes.

    Output (``out_dir`` replaced under the same rules as ``generate``'s, marker
    ``_generate_talos.json``)::

        OUT/
          _generate_talos.json   marker + summary
          _series.json           ground truth: each series' noise pattern
          _shifts.json           ground truth: the injected shifts
          part-00000.parquet     the series

    ``part-00000.parquet`` columns: ``test`` (string, e.g. ``tp5o``), ``platform``
    (string, e.g. ``windows10-64``), ``date`` (date32, UTC day), ``push`` (int32, the
    run's number in its series: 0, 1, ... in time order), ``value`` (double,
    milliseconds, 2 decimals; lower is better). Rows sorted by test, platform, push.
    Each of the ``len(TALOS_TESTS) x len(TALOS_PLATFORMS)`` (240) series has 1 +
    Poisson(2) runs (pushes) on each of the ``days`` days ending with ``end_date``
    (1 + Poisson(0.8) at weekends), about 340 runs for 120 days.

    Noise is multiplicative: ``value = typical x exp(sd x (level + pattern + e))``
    with ``e`` standard normal and ``sd`` the series' run-to-run noise (1-3 %, drawn
    per series), so every size below is in standard deviations (SD) of that noise.
    Each series has one pattern (``TALOS_PATTERNS``: share of series):

    - ``gaussian`` (0.3): the noise alone.
    - ``bimodal`` (0.3): each run sits in the lower or in an upper mode,
      ``mode_offset_sd`` (4-10) above it; ``upper_share`` (0.2-0.5) of the runs in the
      upper mode, the mode of a run chosen at random: a two-state Markov chain whose
      lag-1 autocorrelation ``mode_persistence`` is drawn in 0-0.6 (0: independent runs;
      higher: short streaks in one mode, as when runs land on one machine pool).
    - ``outliers`` (0.2): heavy tail, 5 % of the runs 3 + Exponential(5) SD away from
      the level, 80 % of them upwards (slow runs).
    - ``drift`` (0.2): a slow sine wave of 1-2.5 SD amplitude and a 50-150 day period.

    Shifts: a series gets 0, 1 or 2 shifts (probabilities 0.4 / 0.4 / 0.2), on days at
    least 15 days apart and ``max(7, days // 8)`` days away from either end, at a push
    drawn among that day's runs: from that push on, every mode is ``size_sd`` (1-8,
    uniform, 3 decimals) SD higher (``"regression"``, 70 %) or lower
    (``"improvement"``). ``_shifts.json`` is a JSON list, sorted by test, platform,
    push, of ``{"test", "platform", "pattern", "push"`` (first run at the new level),
    ``"date"`` (its day, ``YYYY-MM-DD``), ``"size_sd", "direction", "before_mean",
    "after_mean"}``, the means being the expected values of a run (mixture mean,
    outliers left out) at the push before and at the shift's push. ``_series.json``
    is a JSON list, sorted by test and platform, of ``{"test", "platform", "pattern",
    "runs", "noise_sd"`` (relative), ``"upper_share", "mode_offset_sd",
    "mode_persistence"`` (0 unless bimodal), ``"shifts"}``.

    Deterministic: same arguments (and numpy/pyarrow) => identical bytes; independent
    of the pings. Raises ``TypeError``/``ValueError`` for bad arguments (``days`` must be
    >= 30) and ``UnsafeOutputDir`` like ``generate``. Returns the summary (also in the
    marker) plus ``out_dir``.
    """
    last_day = _checked_arguments(end_date, ("seed", seed, 0), ("days", days, 30))
    if last_day - dt.timedelta(days=days) < dt.date(1000, 1, 1):
        raise ValueError("days reaches back before the year 1000; use fewer days")
    dates = [last_day - dt.timedelta(days=days - 1 - i) for i in range(days)]
    out = Path(out_dir).expanduser().resolve()
    own = {"part-00000.parquet", TALOS_SHIFTS_NAME, TALOS_SERIES_NAME}
    _check_replaceable(out, TALOS_MARKER_NAME, own.__contains__, "generate_talos")

    rng = np.random.default_rng([seed, 3])
    weekend = np.array([d.weekday() >= 5 for d in dates])
    margin = max(7, days // 8)
    patterns = [name for name, _ in TALOS_PATTERNS]
    pattern_shares = [share for _, share in TALOS_PATTERNS]
    columns = {"test": [], "platform": [], "day": [], "push": [], "value": []}
    series, shifts = [], []
    for test in sorted(TALOS_TESTS):
        typical = float(np.exp(rng.uniform(math.log(20.0), math.log(2000.0))))
        for platform, factor in sorted(TALOS_PLATFORMS):
            pattern = patterns[int(rng.choice(len(patterns), p=pattern_shares))]
            sd = float(rng.uniform(0.01, 0.03))
            day = np.repeat(np.arange(days), 1 + rng.poisson(np.where(weekend, 0.8, 2.0)))
            n = len(day)
            # Everything below is in units of sd, on the log scale.
            extra = np.zeros(n)  # upper mode or outliers, per run
            drift = np.zeros(n)
            upper_share = offset = persistence = 0.0
            if pattern == "bimodal":
                upper_share = round(float(rng.uniform(0.2, 0.5)), 3)
                offset = round(float(rng.uniform(4.0, 10.0)), 3)
                persistence = round(float(rng.uniform(0.0, 0.6)), 3)
                extra = offset * _talos_modes(rng, n, upper_share, persistence)
            elif pattern == "outliers":
                hit = rng.random(n) < 0.05
                sign = np.where(rng.random(n) < 0.8, 1.0, -1.0)
                extra = np.where(hit, sign * (3.0 + rng.exponential(5.0, n)), 0.0)
            elif pattern == "drift":
                amplitude = float(rng.uniform(1.0, 2.5))
                period = float(rng.uniform(50.0, 150.0))
                phase = float(rng.uniform(0.0, 2 * math.pi))
                drift = amplitude * np.sin(2 * math.pi * day / period + phase)
            n_shifts = int(rng.choice(3, p=(0.4, 0.4, 0.2)))
            shift_days: list[int] = []
            for _ in range(100):  # rejection sampling of well separated dates
                if len(shift_days) == n_shifts:
                    break
                candidate = int(rng.integers(margin, days - margin))
                if all(abs(candidate - d) >= 15 for d in shift_days):
                    shift_days.append(candidate)
            level = np.zeros(n)
            at = []
            for d in sorted(shift_days):
                push = int(rng.choice(np.flatnonzero(day == d)))  # every day has a run
                size = round(float(rng.uniform(1.0, 8.0)), 3)
                direction = "regression" if rng.random() < 0.7 else "improvement"
                level[push:] += size if direction == "regression" else -size
                at.append((push, size, direction))
            base = typical * factor * float(rng.uniform(0.97, 1.03))
            noise = rng.standard_normal(n)
            values = base * np.exp(sd * (level + drift + extra + noise))
            # Expected value of a run, outliers left out: lognormal noise, mixture of modes.
            modes = 1 - upper_share + upper_share * math.exp(sd * offset)
            mixture = math.exp(sd * sd / 2) * modes
            for push, size, direction in at:
                before, after = (
                    base * mixture * math.exp(sd * (level[i] + drift[i])) for i in (push - 1, push)
                )
                shifts.append(
                    {
                        "test": test,
                        "platform": platform,
                        "pattern": pattern,
                        "push": push,
                        "date": dates[int(day[push])].isoformat(),
                        "size_sd": size,
                        "direction": direction,
                        "before_mean": round(before, 6),
                        "after_mean": round(after, 6),
                    }
                )
            series.append(
                {
                    "test": test,
                    "platform": platform,
                    "pattern": pattern,
                    "runs": n,
                    "noise_sd": round(sd, 6),
                    "upper_share": upper_share,
                    "mode_offset_sd": offset,
                    "mode_persistence": persistence,
                    "shifts": len(at),
                }
            )
            columns["test"] += [test] * n
            columns["platform"] += [platform] * n
            columns["day"].append(day)
            columns["push"].append(np.arange(n, dtype=np.int32))
            columns["value"].append(np.round(values, 2))
    day_index = np.concatenate(columns["day"])
    table = pa.table(
        {
            "test": pa.array(columns["test"], pa.string()),
            "platform": pa.array(columns["platform"], pa.string()),
            "date": pa.array(np.array(dates, dtype="datetime64[D]")[day_index]).cast(pa.date32()),
            "push": pa.array(np.concatenate(columns["push"]), pa.int32()),
            "value": pa.array(np.concatenate(columns["value"]), pa.float64()),
        },
        schema=TALOS_SCHEMA,
    )
    summary = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "days": days,
        "end_date": last_day.strftime("%Y%m%d"),
        "rows": table.num_rows,
        "series": len(series),
        "tests": len(TALOS_TESTS),
        "platforms": [p for p, _ in TALOS_PLATFORMS],
        "patterns": {name: sum(s["pattern"] == name for s in series) for name in patterns},
        "shifts": len(shifts),
        "regressions": sum(s["direction"] == "regression" for s in shifts),
    }

    def write(tmp: Path) -> None:
        pq.write_table(table, tmp / "part-00000.parquet", compression="snappy")
        (tmp / TALOS_SHIFTS_NAME).write_text(json.dumps(shifts, indent=1) + "\n")
        (tmp / TALOS_SERIES_NAME).write_text(json.dumps(series, indent=1) + "\n")
        (tmp / TALOS_MARKER_NAME).write_text(json.dumps(summary, indent=2) + "\n")

    _write_atomically(out, write)
    return {"out_dir": str(out), **summary}


def _talos_modes(rng: np.random.Generator, n: int, share: float, persistence: float) -> np.ndarray:
    """``n`` runs' modes (1.0 upper, 0.0 lower) of a two-state Markov chain that is in the
    upper mode ``share`` of the time, with lag-1 autocorrelation ``persistence``
    (0: independent runs), starting from its stationary distribution."""
    stay_up = share + persistence * (1.0 - share)  # P(upper | upper)
    go_up = share * (1.0 - persistence)  # P(upper | lower)
    draws = rng.random(n)
    upper = np.empty(n)
    state = draws[0] < share
    for i in range(n):
        if i:
            state = draws[i] < (stay_up if state else go_up)
        upper[i] = state
    return upper


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
    pings_per_client = 1 + rng.multinomial(n_pings - n_clients, activity / activity.sum())
    client_ids = _uuid4_strings(rng, n_clients)

    is_fennec = rng.random(n_clients) < APP_FENNEC_SHARE
    apps = np.array(["Firefox", "Fennec"])
    client_app = is_fennec.astype(np.int8)
    client_channel = np.empty(n_clients, dtype=np.int8)
    for app_code, app in enumerate(apps):
        mask = client_app == app_code
        client_channel[mask] = _choice(rng, CHANNELS, CHANNEL_WEIGHTS[app], int(mask.sum()))

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
        client_arch[mask] = np.array(archs, dtype=object)[_choice(rng, archs, a_weights, count)]

    # Add-ons: 0..6 per profile (Fennec: at most 2), without replacement. Each profile
    # belongs to a community; its add-ons are drawn by popularity, the weights of its
    # community's add-ons multiplied by COMMUNITY_BOOST (Gumbel top-k: the k largest of
    # log(weight) + Gumbel noise). Drawn from a stream of their own.
    n_addons = rng.choice(len(ADDON_COUNT_P), size=n_clients, p=ADDON_COUNT_P)
    n_addons[client_app == 1] = np.minimum(n_addons[client_app == 1], 2)
    addon_rng = np.random.default_rng([seed, 1])
    community_names = [name for name, _ in ADDON_COMMUNITIES]
    client_community = _choice(
        addon_rng, community_names, [w for _, w in ADDON_COMMUNITIES], n_clients
    )
    addon_community = np.array(
        [community_names.index(c) if c in community_names else -1 for _, _, c, _ in ADDONS]
    )
    log_weights = np.log([w for _, _, _, w in ADDONS])[None, :] + np.where(
        addon_community[None, :] == client_community[:, None],
        np.log(COMMUNITY_BOOST),
        0.0,
    )
    keys = log_weights + addon_rng.gumbel(size=(n_clients, len(ADDONS)))
    ranked = np.argsort(-keys, axis=1, kind="stable")  # catalogue indexes, best first
    # Keep the first n_addons of each row, re-expressed as ranks in id order and
    # sorted, so every profile's list is sorted by add-on id.
    ids_sorted = sorted(addon_id for addon_id, _, _, _ in ADDONS)
    id_rank = np.array([ids_sorted.index(addon_id) for addon_id, _, _, _ in ADDONS])
    take = np.arange(len(ADDONS)) < n_addons[:, None]
    picked = np.where(take, id_rank[ranked], len(ADDONS))
    picked.sort(axis=1)
    addon_offsets = pa.array(np.r_[0, np.cumsum(n_addons)], pa.int32())
    name_of = {addon_id: name for addon_id, name, _, _ in ADDONS}
    client_addons = pa.ListArray.from_arrays(
        addon_offsets,
        pa.array(np.array(ids_sorted, dtype=object)[picked[take]], pa.string()),
    )
    client_addon_names = pa.ListArray.from_arrays(
        addon_offsets,
        pa.array(
            np.array([name_of[i] for i in ids_sorted], dtype=object)[picked[take]],
            pa.string(),
        ),
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
    subsession_s = np.maximum(1, np.floor(np.minimum(session_s, SUBSESSION_MAX_S) * fraction))
    subsession_hours = subsession_s / 3600.0

    # Sort: partition (day, app, channel, build), then client_id, then document_id.
    build_names = [(v, _build_id(dates[0], offset, hhmmss)) for _, v, offset, hhmmss, _ in BUILDS]
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
    uptime = _uptime_histograms(session_s)

    # Hangs: a stream of their own. A profile's jank grows with its GC slowness.
    hang_rng = np.random.default_rng([seed, 2])
    client_jank = client_gc_factor**1.5 * hang_rng.lognormal(0.0, 0.6, size=n_clients)
    hangs, hang_counts = _hangs(
        hang_rng,
        subsession_s,
        client_os[owner],
        os_names,
        client_jank[owner] * np.where(client_e10s[owner], 0.7, 1.0),
    )

    # Partition index: consecutive ids in sorted order.
    combo = ((day.astype(np.int64) * 2 + client_app[owner]) * len(CHANNELS) + channel) * len(
        BUILDS
    ) + build_rank[build]
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
            "addon_names": client_addon_names.take(pa.array(owner)),
            "simple_measures_uptime": uptime,
            "hangs": hangs,
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
        "hangs": int(hang_counts.sum()),
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
                (i, offset, weight) for i, (_, _, offset, _, weight) in catalogue if offset <= d
            ]
            weights = [
                weight
                * SUPERSEDED_FACTOR ** sum(1 for _, other, _ in available if other > offset)
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


def _uptime_histograms(session_s: np.ndarray) -> pa.MapArray:
    """Return one ``simple_measures_uptime`` histogram per ping (``map<int32, int32>``).

    The browser's uptime in whole minutes (the session length) counted once in
    ``UPTIME_BUCKETS``: every map has exactly one entry, ``{bucket lower bound: 1}``, so
    summing the maps of many pings gives the population's uptime histogram.
    """
    minutes = session_s // 60
    bucket = np.searchsorted(UPTIME_BUCKETS, minutes, side="right") - 1
    n = len(session_s)
    return pa.MapArray.from_arrays(
        pa.array(np.arange(n + 1), pa.int32()),
        pa.array(UPTIME_BUCKETS[bucket], pa.int32()),
        pa.array(np.ones(n, dtype=np.int32), pa.int32()),
    )


def hang_stack_catalogue(os_names) -> tuple[list[list[str]], list[str], np.ndarray]:
    """Return ``(stacks, categories, probabilities)`` of the possible hang stacks.

    ``stacks[o * len(HANG_SUFFIXES) + k]`` is the stack (outermost frame first) of
    suffix ``k`` on OS ``os_names[o]``, ``categories[k]`` its category, and
    ``probabilities[o, k]`` the chance that a hang on that OS has suffix ``k``: the
    suffixes' weights, the same on every desktop OS; Android has no plugins, so there
    the other suffixes share the plugins' weight in proportion.
    """
    categories = [category for category, _, _ in HANG_SUFFIXES]
    stacks = [
        list(HANG_PREFIXES[os_name]) + list(frames)
        for os_name in os_names
        for _, frames, _ in HANG_SUFFIXES
    ]
    probabilities = np.array(
        [
            [
                0.0 if os_name == "Android" and category == "plugin" else weight
                for category, _, weight in HANG_SUFFIXES
            ]
            for os_name in os_names
        ],
        dtype=float,
    )
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return stacks, categories, probabilities


def _hangs(
    rng: np.random.Generator,
    subsession_s: np.ndarray,
    os_code: np.ndarray,
    os_names,
    jank: np.ndarray,
) -> tuple[pa.ListArray, np.ndarray]:
    """Return the ``hangs`` column (``list<struct<stack, duration_ms>>``) and the counts.

    Hangs per ping: Poisson with mean ``HANG_RATE_PER_HOUR`` x subsession hours x the
    profile's ``jank``, the rate itself gamma-distributed per ping (shape 0.7), so the
    counts have a long tail (at most ``HANG_MAX_PER_PING``). Stacks: drawn
    independently per hang from ``hang_stack_catalogue``. Durations: whole
    milliseconds, ``HANG_THRESHOLD_MS`` + 1 + a Lomax(``HANG_TAIL_SHAPE``) excess of
    median ``HANG_EXCESS_MEDIAN_MS``, capped at ``HANG_MAX_MS``, drawn independently of
    the stack (plugin hangs last as long as the others): every hang is longer than
    500 ms, half last under about 1.4 s, a few last minutes.
    """
    n = len(subsession_s)
    mean = HANG_RATE_PER_HOUR * (subsession_s / 3600.0) * jank
    count = np.minimum(rng.poisson(mean * rng.gamma(0.7, 1 / 0.7, size=n)), HANG_MAX_PER_PING)
    stacks, _, probabilities = hang_stack_catalogue(os_names)
    hang_os = np.repeat(os_code, count)
    cdf = np.cumsum(probabilities, axis=1)
    u = rng.random(len(hang_os))
    suffix = np.empty(len(hang_os), dtype=np.int64)
    for o in range(len(os_names)):  # per OS: one search in its own cumulative weights
        mask = hang_os == o
        suffix[mask] = np.searchsorted(cdf[o], u[mask], side="right")
    suffix = np.minimum(suffix, len(HANG_SUFFIXES) - 1)
    excess_scale = HANG_EXCESS_MEDIAN_MS / (2 ** (1 / HANG_TAIL_SHAPE) - 1)  # Lomax median
    excess = np.floor(excess_scale * rng.pareto(HANG_TAIL_SHAPE, size=len(suffix)))
    duration = np.minimum(HANG_THRESHOLD_MS + 1 + excess, HANG_MAX_MS).astype(np.int32)
    stack_column = pa.array(stacks, pa.list_(pa.string())).take(
        pa.array(hang_os.astype(np.int64) * len(HANG_SUFFIXES) + suffix)
    )
    values = pa.StructArray.from_arrays(
        [stack_column, pa.array(duration, pa.int32())], fields=list(HANG_TYPE)
    )
    offsets = pa.array(np.r_[0, np.cumsum(count)], pa.int32())
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(HANG_TYPE)), count


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
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="DIR",
        help="also write the pings as newline-delimited JSON to DIR (default: OUT/../pings_json)",
    )
    parser.add_argument(
        "--talos",
        nargs="?",
        const="",
        metavar="DIR",
        help="also write Talos-like performance series with injected shifts to DIR "
        "(default: OUT/../talos)",
    )
    parser.add_argument(
        "--talos-days",
        type=int,
        default=120,
        help="days of Talos series ending with --end-date (default 120)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    json_dir = talos_dir = None
    if args.json is not None:
        json_dir = Path(args.json or out.parent / "pings_json").expanduser().resolve()
    if args.talos is not None:
        talos_dir = Path(args.talos or out.parent / "talos").expanduser().resolve()

    started = time.perf_counter()
    try:
        _check_apart(out=out, json=json_dir, talos=talos_dir)
        if talos_dir is not None:  # fail early, before writing anything
            _check_replaceable(
                talos_dir,
                TALOS_MARKER_NAME,
                {"part-00000.parquet", TALOS_SHIFTS_NAME}.__contains__,
                "generate_talos",
            )
        summary = generate(
            out,
            pings=args.pings,
            days=args.days,
            seed=args.seed,
            end_date=args.end_date,
            json_dir=json_dir,
        )
        if talos_dir is not None:
            summary["talos"] = generate_talos(
                talos_dir, seed=args.seed, days=args.talos_days, end_date=args.end_date
            )
    except (ValueError, UnsafeOutputDir) as exc:
        parser.error(str(exc))
    elapsed = time.perf_counter() - started
    json.dump(summary, sys.stdout, indent=2)
    print()
    extra = "".join(
        f", {what} in {where}"
        for what, where in (("JSON", json_dir), ("Talos series", talos_dir))
        if where is not None
    )
    print(
        f"wrote {summary['rows']:,} pings in {summary['partitions']} files{extra} "
        f"in {elapsed:.2f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
