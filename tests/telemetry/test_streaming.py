"""The kernel's helper for continuous jobs (``telemetry.streaming``): live metrics. Its
listener writes one compact, bounded JSON line per progress event to the file the portal
names, which the worker's tail reads (``jobs.stream_progress``). One slow test runs a real
streaming query on the embedded local Spark."""

import json
import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.stream_progress import ProgressTail
from telemetry import streaming

PROGRESS = {
    "id": "0f1e2d3c-aaaa-bbbb-cccc-000000000000",
    "runId": "1f1e2d3c-aaaa-bbbb-cccc-000000000000",
    "name": None,
    "timestamp": "2026-12-03T10:00:01.000Z",
    "batchId": 4,
    "numInputRows": 10,
    "inputRowsPerSecond": "NaN",
    "processedRowsPerSecond": 20.5,
    "durationMs": {"addBatch": 300, "triggerExecution": 420},
    "eventTime": {"watermark": "2026-12-03T09:59:00.000Z"},
    "stateOperators": [{"numRowsTotal": 3}, {"numRowsTotal": 4}],
    "sources": [{"description": "RateStreamV2[rowsPerSecond=10]", "endOffset": {"0": "x" * 500}}],
}


def test_a_progress_event_becomes_one_compact_line():
    record = streaming.progress_line(PROGRESS)
    assert record["batchId"] == 4 and record["durationMs"] == 420.0
    assert record["inputRowsPerSecond"] is None  # Spark's NaN
    assert record["processedRowsPerSecond"] == 20.5 and record["stateRows"] == 7
    assert record["watermark"] == "2026-12-03T09:59:00.000Z" and record["name"] == ""
    (source,) = record["sources"]
    assert len(source["endOffset"]) == streaming.SOURCE_TEXT_CHARS
    assert source["endOffset"].startswith('{"0": "xxx')


def test_the_listener_appends_lines_the_worker_reads(tmp_path):
    path = tmp_path / "home" / "progress.jsonl"
    path.parent.mkdir()
    listener = streaming._listener_class()(path)
    progress = SimpleNamespace(json=json.dumps(PROGRESS))
    listener.onQueryProgress(SimpleNamespace(progress=progress))
    listener.onQueryIdle(SimpleNamespace(timestamp="2026-12-03T10:00:20.000Z", id=PROGRESS["id"]))
    listener.onQueryProgress(SimpleNamespace(progress=SimpleNamespace(json="{broken")))
    tail = ProgressTail(tmp_path, ("home", "progress.jsonl"), {os.geteuid()})
    assert tail.poll()
    (point,) = tail.points
    assert point["batchId"] == 4 and point["query"] == "0f1e2d3c"
    assert tail.last_event_at.second == 20


def test_the_file_is_emptied_past_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "PROGRESS_MAX_BYTES", 1000)
    path = tmp_path / "progress.jsonl"
    for _ in range(20):
        streaming.append_progress_line(path, streaming.progress_line(PROGRESS))
    assert path.stat().st_size < 1000 + 600
    assert all(json.loads(line)["batchId"] == 4 for line in path.read_text().splitlines())


def test_report_progress_registers_one_listener_per_session_in_the_portal_only(
    tmp_path, monkeypatch
):
    added = []
    session = SimpleNamespace(streams=SimpleNamespace(addListener=added.append))
    monkeypatch.delenv(streaming.PROGRESS_FILE_ENV, raising=False)
    assert streaming.report_progress(session) is None and not added
    monkeypatch.setenv(streaming.PROGRESS_FILE_ENV, str(tmp_path / "p.jsonl"))
    monkeypatch.setattr(streaming, "_reporting", {})
    first = streaming.report_progress(session)
    assert streaming.report_progress(session) is first and added == [first]
    assert first.path == tmp_path / "p.jsonl"


@pytest.mark.slow
def test_a_real_query_reports_its_progress(tmp_path, monkeypatch):
    """A rate source with a one-second trigger on the embedded local Spark: the helper's
    listener writes a line per batch, with rates, durations and the source's offset; the
    stop flag then ends ``run_until_stopped``."""
    from pyspark.sql import SparkSession

    progress = tmp_path / "progress.jsonl"
    stop = tmp_path / "stop"
    monkeypatch.setenv(streaming.PROGRESS_FILE_ENV, str(progress))
    monkeypatch.setenv(streaming.STOP_FILE_ENV, str(stop))
    monkeypatch.setattr(streaming, "_reporting", {})
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        query = (
            spark.readStream.format("rate")
            .option("rowsPerSecond", 50)
            .load()
            .writeStream.format("noop")
            .queryName("rates")
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(processingTime="1 second")
            .start()
        )
        tail = ProgressTail(tmp_path, ("progress.jsonl",), {os.geteuid()})

        def stop_when_reported() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(tail.points) < 3:
                tail.poll()
                time.sleep(0.5)
            Path(stop).write_text("stop\n")

        watcher = threading.Thread(target=stop_when_reported)
        watcher.start()
        assert streaming.run_until_stopped(query, poll_seconds=0.5) is True
        watcher.join()
    finally:
        spark.stop()
    assert len(tail.points) >= 3, progress.read_text() if progress.exists() else "no file"
    last = tail.points[-1]
    assert last["query"] == "rates" and last["batchId"] >= 2
    assert last["durationMs"] is not None and last["processedRowsPerSecond"] is not None
    assert "rate" in last["sources"][0]["description"].lower()
    assert last["sources"][0]["endOffset"]


_CONNECT_SCRIPT = """
import os, sys, threading, time
from pathlib import Path
from pyspark.sql import SparkSession
from telemetry import streaming

spark = SparkSession.builder.remote("local[2]").getOrCreate()
assert type(spark).__module__ == "pyspark.sql.connect.session", type(spark)
query = (
    spark.readStream.format("rate").option("rowsPerSecond", 10).load()
    .writeStream.format("noop").queryName("connected")
    .option("checkpointLocation", sys.argv[1])
    .trigger(processingTime="1 second").start()
)
progress = Path(os.environ[streaming.PROGRESS_FILE_ENV])

def stop_when_reported():
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if progress.exists() and len(progress.read_text().splitlines()) >= 3:
            break
        time.sleep(0.5)
    Path(os.environ[streaming.STOP_FILE_ENV]).write_text("stop")

threading.Thread(target=stop_when_reported, daemon=True).start()
print("stopped:", streaming.run_until_stopped(query, poll_seconds=0.5), flush=True)
os._exit(0)  # the listener's event stream would outlive the session's stop
"""


@pytest.mark.slow
def test_a_query_on_spark_connect_reports_its_progress(tmp_path):
    """The same on Spark Connect (a local Connect server, in a process of its own): the
    client runs the listener in the kernel, so the lines are written there too."""
    import subprocess
    import sys

    from django.conf import settings

    progress = tmp_path / "progress.jsonl"
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": str(settings.BASE_DIR),
        streaming.PROGRESS_FILE_ENV: str(progress),
        streaming.STOP_FILE_ENV: str(tmp_path / "stop"),
    }
    env.pop("SPARK_REMOTE", None)
    done = subprocess.run(
        [sys.executable, "-c", _CONNECT_SCRIPT, str(tmp_path / "checkpoint")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "stopped: True" in done.stdout, done.stderr[-3000:]
    tail = ProgressTail(tmp_path, ("progress.jsonl",), {os.geteuid()})
    tail.poll()
    assert len(tail.points) >= 3, progress.read_text()
    assert tail.points[-1]["query"] == "connected"
    assert tail.points[-1]["processedRowsPerSecond"] is not None
