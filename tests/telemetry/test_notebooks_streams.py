"""The streaming example notebooks, run as the portal runs them (``jobs.executor``:
papermill in the portal kernel, in a sandbox) with ``available_now``: each processes the
pings that have landed, then ends."""

import base64
import datetime as dt
from pathlib import Path

import nbformat
import numpy as np
import pytest

from telemetry import landing
from tests import sandboxes
from tests.stream_windows import batch_windows, local_spark, sink_rows, sink_windows

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
PLOTLY = "application/vnd.plotly.v1+json"


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


def values(array) -> list:
    """A Plotly JSON array: a list, or a typed array (``{"dtype", "bdata"}``)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


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
    assert sum(sum(values(trace["y"])) for trace in fig["data"]) == sum(expected.values())
