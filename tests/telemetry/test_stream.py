"""The streaming pings: the landing-directory generator (telemetry/landing.py) and
``PingsStream`` (telemetry/stream/). One slow test runs real streaming queries."""

import datetime as dt
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import telemetry
from telemetry import PingsStream, TelemetryError, landing, stream_schema
from telemetry.filters import parse_partition_filter, parse_value_filter

ROOT = Path(__file__).resolve().parent.parent.parent


def read(path) -> pa.Table:
    return pq.read_table(path)


# --- the generator ---------------------------------------------------------------------------


def test_write_batch_is_deterministic(tmp_path):
    first = landing.write_batch(tmp_path / "a", 4, seed=9, pings=150)
    again = landing.write_batch(tmp_path / "b", 4, seed=9, pings=150)
    assert first.name == "pings-000004.parquet"
    assert first.read_bytes() == again.read_bytes()
    other_batch = landing.write_batch(tmp_path / "a", 5, seed=9, pings=150)
    other_seed = landing.write_batch(tmp_path / "c", 4, seed=10, pings=150)
    ids = set(read(first).column("document_id").to_pylist())
    assert not ids & set(read(other_batch).column("document_id").to_pylist())
    assert not ids & set(read(other_seed).column("document_id").to_pylist())
    assert len(ids) == 150


def test_batches_have_the_fixed_schema_of_pings_stream(tmp_path):
    path = landing.write_batch(tmp_path, 0, seed=1, pings=20)
    assert read(path).schema.equals(landing.STREAM_SCHEMA)
    schema = stream_schema()
    # Pings' columns (data columns, then the partition columns), then the event time.
    data_columns = [f.name for f in telemetry.sample.SCHEMA]
    assert schema.fieldNames() == [
        *data_columns,
        *telemetry.PARTITION_COLUMNS,
        "submission_timestamp",
    ]
    assert schema["submission_timestamp"].dataType.typeName() == "timestamp"
    assert schema["hangs"].dataType.simpleString() == (
        "array<struct<stack:array<string>,duration_ms:int>>"
    )
    assert all(f.nullable for f in schema)  # as Spark's file sources report it


def test_event_time_lies_before_the_batch_time_and_reaches_it(tmp_path):
    table = read(landing.write_batch(tmp_path, 7, seed=2, pings=400))
    times = table.column("submission_timestamp").to_pylist()
    at = landing.batch_time(7)
    assert at == landing.EPOCH + 7 * landing.BATCH_SPACING
    assert max(times) == at
    assert min(times) >= at - landing.MAX_DELAY
    assert times == sorted(times)
    late = sum(t < at - landing.BATCH_SPACING for t in times)
    assert 0 < late < 0.15 * len(times)  # LATE_SHARE, 5 %
    days = table.column("submission_date").to_pylist()
    assert days == [t.strftime("%Y%m%d") for t in times]

    # An explicit time, in any zone: the last file of a test moves the watermark with it.
    at = dt.datetime(2027, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    table = read(landing.write_batch(tmp_path, 8, seed=2, pings=5, at=at))
    times = table.column("submission_timestamp").to_pylist()
    assert max(times) == at and min(times) >= at - landing.MAX_DELAY
    with pytest.raises(ValueError, match="aware"):
        landing.write_batch(tmp_path, 9, seed=2, at=dt.datetime(2027, 1, 1))
    with pytest.raises(ValueError, match="pings"):
        landing.write_batch(tmp_path, 9, seed=2, pings=0)
    with pytest.raises(TypeError, match="batch_index"):
        landing.write_batch(tmp_path, "9", seed=2)


def test_clients_come_back_across_batches_with_the_same_profile(tmp_path):
    tables = [read(landing.write_batch(tmp_path, i, seed=3, pings=300)) for i in range(4)]
    clients = [set(t.column("client_id").to_pylist()) for t in tables]
    assert len(clients[0] & clients[3]) >= 10
    profile = {}
    for table in tables:
        for row in table.select(["client_id", "os_name", "channel", "addons"]).to_pylist():
            key = row.pop("client_id")
            assert profile.setdefault(key, row) == row
    hangs = pa.concat_tables(tables).column("hangs")
    assert pc.sum(pc.list_value_length(hangs)).as_py() > 100


def test_write_batch_never_shows_a_partial_file(tmp_path, monkeypatch):
    seen = []
    real_write = pq.write_table

    def write_then_fail(table, where, **kwargs):
        real_write(table.slice(0, 1), where, **kwargs)
        seen.append(sorted(os.listdir(tmp_path)))
        raise OSError("disk full")

    monkeypatch.setattr(landing.pq, "write_table", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        landing.write_batch(tmp_path, 0, seed=1, pings=10)
    # While being written the file had a hidden name (Spark's file source skips it),
    # and a failure leaves nothing behind.
    assert len(seen[0]) == 1 and seen[0][0].startswith(".pings-000000.parquet.")
    assert os.listdir(tmp_path) == []

    monkeypatch.setattr(landing.pq, "write_table", real_write)
    path = landing.write_batch(tmp_path, 0, seed=1, pings=10)
    assert os.listdir(tmp_path) == [path.name]
    assert path.stat().st_mode & 0o044 == 0o044 & ~_umask()  # readable by sandboxes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cli_writes_a_batch_every_period_and_continues_after_a_restart(tmp_path, capsys):
    sleeps = []
    now = [100.0]

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    args = ["--landing", str(tmp_path), "--every", "5", "--batches", "3", "--pings", "10"]
    assert landing.main(args, sleep=sleep, clock=lambda: now[0]) == 0
    assert sleeps == [5.0, 5.0]  # none after the last batch
    assert sorted(os.listdir(tmp_path)) == [landing.batch_file_name(i) for i in range(3)]
    assert capsys.readouterr().out.split() == [
        str(tmp_path / landing.batch_file_name(i)) for i in range(3)
    ]
    expected = landing.build_batch(1, seed=42, pings=10)
    assert read(tmp_path / landing.batch_file_name(1)).equals(expected)

    assert landing.main([*args[:4], "--batches", "1", "--pings", "10"], sleep=sleep) == 0
    assert landing.next_batch_index(tmp_path) == 4


def test_cli_runs_as_a_module(tmp_path):
    env = {**os.environ, "TELEMETRY_STREAM_ROOT": str(tmp_path / "landing")}
    done = subprocess.run(
        [sys.executable, "-m", "telemetry.stream", "--batches", "2", "--every", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # in particular no runpy warning
    assert sorted(os.listdir(tmp_path / "landing")) == [
        landing.batch_file_name(0),
        landing.batch_file_name(1),
    ]


# --- PingsStream without Spark running -------------------------------------------------------


def test_pings_stream_rejects_bad_requests_before_starting_spark(tmp_path, monkeypatch):
    landing.write_batch(tmp_path, 0, seed=1, pings=5)
    with pytest.raises(TelemetryError, match="unknown field 'os'"):
        PingsStream(None, tmp_path, os="Linux")
    with pytest.raises(TelemetryError, match="YYYYMMDD"):
        PingsStream(None, tmp_path, submission_date="2026-11-3")
    with pytest.raises(TelemetryError, match="after its end"):
        PingsStream(None, tmp_path, version=("54.0", "53.0"))
    with pytest.raises(TelemetryError, match="max_files_per_trigger"):
        PingsStream(None, tmp_path, max_files_per_trigger=0)
    with pytest.raises(TelemetryError, match="fraction"):
        PingsStream(None, tmp_path, fraction=2)
    monkeypatch.setenv("TELEMETRY_STREAM_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(TelemetryError, match=r"nowhere does not exist.*python -m telemetry.stream"):
        PingsStream()
    assert telemetry.stream_root().local == str(tmp_path / "nowhere")


# --- with Spark ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    yield session
    session.stop()


def _python_count(tables, filters) -> int:
    """Rows matching ``filters`` by the filters' own Python semantics (``Filter.matches``
    for partition fields, = / between for data columns)."""
    count = 0
    for row in pa.concat_tables(tables).to_pylist():
        ok = True
        for field, value in filters.items():
            if field in telemetry.PARTITION_COLUMNS:
                ok &= parse_partition_filter(field, value).matches(row[field])
            else:
                flt = parse_value_filter(field, value)
                ok &= flt.low <= row[field] <= flt.high if flt.is_range else row[field] == flt.exact
        count += ok
    return count


@pytest.mark.slow
def test_streaming_query_reads_every_batch_once_with_the_filters(spark, tmp_path):
    from pyspark.sql import functions as F

    root = tmp_path / "landing"
    paths = [landing.write_batch(root, i, seed=5, pings=400) for i in range(4)]
    (root / "README.txt").write_text("not pings\n")  # only *.parquet files are read
    (root / ".pings-000009.parquet.x.tmp").write_bytes(b"partial")  # hidden: skipped
    filters = {
        "app": "Firefox",
        "version": ("51.0", "53.0a2"),  # as versions: 51.0, 51.0.1, 52.0 and 53.0a2
        "build_id": ("20260101", "20261231"),
        "session_length_s": (60, 10**6),
    }
    tables = [read(p) for p in paths]
    expected = _python_count(tables, filters)
    assert 0 < expected < sum(t.num_rows for t in tables)

    stream = PingsStream(spark, root, max_files_per_trigger=1, **filters)
    assert stream.isStreaming and stream.schema == stream_schema()
    query = (
        stream.writeStream.format("memory")
        .queryName("pings_stream_test")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(120)
    assert [p["numInputRows"] for p in query.recentProgress if p["numInputRows"]] == [
        t.num_rows for t in tables
    ]  # one file per micro-batch
    streamed = spark.table("pings_stream_test")
    assert streamed.count() == expected
    assert streamed.select("document_id").distinct().count() == expected

    batch = spark.read.schema(stream_schema()).option("pathGlobFilter", "*.parquet")
    batch = batch.parquet(str(root))
    for field, value in filters.items():
        flt = (
            parse_partition_filter(field, value)
            if field in telemetry.PARTITION_COLUMNS
            else parse_value_filter(field, value)
        )
        batch = batch.where(telemetry.filters.column_predicate(flt))
    assert batch.count() == expected

    # Event-time windows: a last file far later moves the watermark past every window,
    # and the finalised windows equal a batch computation over the same files.
    last = landing.batch_time(3) + landing.MAX_DELAY + dt.timedelta(minutes=10)
    landing.write_batch(root, 4, seed=5, pings=1, at=last)
    windows = (
        PingsStream(spark, root)
        .withWatermark("submission_timestamp", "5 minutes")
        .groupBy(F.window("submission_timestamp", "1 minute"))
        .count()
    )
    query = (
        windows.writeStream.format("memory")
        .queryName("pings_windows_test")
        .outputMode("append")
        .option("checkpointLocation", str(tmp_path / "checkpoint-windows"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(120)
    # Window starts as epoch seconds: Python would give Spark's timestamps as naive local times.
    start = F.col("window.start").cast("long").alias("start")
    finalised = {
        r.start: r["count"]
        for r in spark.table("pings_windows_test").select(start, "count").collect()
    }
    watermark = (last - dt.timedelta(minutes=5)).timestamp()
    every = (
        spark.read.schema(stream_schema())
        .option("pathGlobFilter", "*.parquet")
        .parquet(str(root))
        .groupBy(F.window("submission_timestamp", "1 minute"))
        .count()
        .select(start, "count")
        .collect()
    )
    expected_windows = {r.start: r["count"] for r in every if r.start + 60 <= watermark}
    assert len(expected_windows) >= 8  # batches 0-3, 60 s apart, pings up to 5 min late
    assert finalised == expected_windows
