"""The streaming example notebooks, run as the portal runs them (``jobs.executor``:
papermill in the portal kernel, in a sandbox) with ``available_now``: each processes the
pings that have landed, then ends."""

import datetime as dt
import json
from pathlib import Path

import nbformat
import pandas as pd
import pyarrow.parquet as pq
import pytest

from telemetry import landing
from tests import sandboxes
from tests.stream_windows import (
    PLOTLY,
    batch_windows,
    local_spark,
    plotly_values,
    sink_rows,
    sink_windows,
)

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def land(directory, batches: int, seed: int = 42):
    """Write ``batches`` batches, then a last one whose event time moves the watermark past
    every earlier window (31 min 7 s later: no window boundary on the watermark)."""
    for i in range(batches):
        landing.write_batch(directory, i, seed=seed, pings=100)
    last = landing.batch_time(batches - 1) + dt.timedelta(minutes=31, seconds=7)
    landing.write_batch(directory, batches, seed=seed, pings=100, at=last)


def execute(name, tmp, landing_dir, **parameters):
    checkpoint, output = tmp / "checkpoint", tmp / "output"
    outcome = sandboxes.execute(
        EXAMPLES / name,
        tmp / "output.ipynb",
        {
            "checkpoint_dir": str(checkpoint),
            "output_dir": str(output),
            "available_now": True,
            **parameters,
        },
        read_only=[landing_dir],
        writable=[checkpoint, output],
        env={"TELEMETRY_STREAM_ROOT": str(landing_dir)},
        timeout=300,
    )
    assert outcome.status == "succeeded", (
        f"{outcome.status}: {outcome.message}\n{outcome.error.get('traceback', '')}"
    )
    return nbformat.read(str(outcome.output_path), as_version=4), output


def figures(nb):
    return [
        o["data"][PLOTLY]
        for c in nb.cells
        for o in c.get("outputs", [])
        if PLOTLY in o.get("data", {})
    ]


def test_windowed_counts_sink_equals_a_batch_recomputation():
    """The sink holds every window the watermark finalised, once, with the counts of a
    batch read of the same files; the chart shows them per OS."""
    base = sandboxes.shared_dir("windowed")
    land(base / "landing", 12)
    nb, output = execute("stream_windowed_counts.ipynb", base, base / "landing")
    spark = local_spark()
    expected = batch_windows(spark, base / "landing")
    assert len(expected) > 10
    assert sink_windows(spark, output) == expected
    assert sink_rows(spark, output) == len(expected)
    (fig,) = figures(nb)
    assert sum(sum(plotly_values(trace["y"])) for trace in fig["data"]) == sum(expected.values())


def landed(directory, *, last: bool):
    """The landing files' rows as pandas (the last file, by name, only with ``last``)."""
    files = sorted(directory.glob("pings-*.parquet"))
    return pd.concat(pq.read_table(f).to_pandas() for f in (files if last else files[:-1]))


def recomputed_sessions(pings, timeout=dt.timedelta(minutes=10)):
    """Hang sessions by the notebook's definition, recomputed in pandas: per client, its
    pings with hangs in event-time order, split where two are more than ``timeout`` apart.
    A sorted list of (client_id, start in ms since the epoch, pings, hangs, hang_ms)."""
    pings = pings[pings["hangs"].map(len) > 0].sort_values("submission_timestamp")
    sessions = []
    for client_id, rows in pings.groupby("client_id"):
        current = None
        for at, hangs in zip(rows["submission_timestamp"], rows["hangs"], strict=True):
            if current is not None and at - current[2] > timeout:
                sessions.append(current)
                current = None
            if current is None:
                current = [client_id, at, at, 0, 0, 0]
            current[2] = at
            current[3] += 1
            current[4] += len(hangs)
            current[5] += sum(int(h["duration_ms"]) for h in hangs)
        sessions.append(current)
    epoch = pd.Timestamp(0, tz="UTC")
    return sorted(
        (c, (start - epoch) // pd.Timedelta(milliseconds=1), n, h, ms)
        for c, start, _, n, h, ms in sessions
    )


def test_hang_sessions_are_those_of_a_batch_recomputation():
    """Every session of the pings before the last file has ended (the last file is 31 min
    later), and the sink holds each once, as a recomputation in pandas finds them."""
    base = sandboxes.shared_dir("sessions")
    land(base / "landing", 40)
    nb, output = execute("stream_hang_sessions.ipynb", base, base / "landing")
    spark = local_spark()
    rows = (
        spark.read.parquet(str(output))
        .selectExpr("client_id", "unix_millis(session_start)", "pings", "hangs", "hang_ms")
        .collect()
    )
    expected = recomputed_sessions(landed(base / "landing", last=False))
    assert any(s[2] > 1 for s in expected)  # some sessions span several pings
    assert sorted(tuple(r) for r in rows) == expected
    assert len(figures(nb)) == 1


def test_addon_join_writes_every_install_and_counts_them():
    """Each installed add-on of every ping is a row of the sink, with its catalogue
    category; the observed counters add up to the landing files' totals."""
    base = sandboxes.shared_dir("addons")
    land(base / "landing", 5)
    nb, output = execute("stream_addon_join.ipynb", base, base / "landing")
    pings = landed(base / "landing", last=True)
    installs = int(pings["addons"].map(len).sum())
    spark = local_spark()
    sink = spark.read.parquet(str(output))
    assert sink.count() == installs
    assert sink.where("category IS NULL").count() == 0
    assert sink.select("document_id", "addon_id").distinct().count() == installs
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    (line,) = [x for x in text.splitlines() if x.startswith("counters: ")]
    assert json.loads(line.removeprefix("counters: ")) == {
        "pings": len(pings),
        "installs": installs,
        "pings_without_addons": int((pings["addons"].map(len) == 0).sum()),
        "joined": installs,
        "unknown_addons": 0,
    }
    (fig,) = figures(nb)
    assert sum(plotly_values(fig["data"][0]["y"])) == installs
