"""The landing directory's retention (``telemetry.landing.prune_landing``, run by
``write_batch`` and ``python -m telemetry.stream --retain``): old batch files go, nothing
else does, and a streaming query over the directory keeps working. Real files, a real
local Spark for the slow tests."""

import os
import time
from pathlib import Path

import pytest

from telemetry import PingsStream, landing, stream_schema
from tests.telemetry.test_stream import spark  # noqa: F401 - the module's local Spark session

SPACING = landing.BATCH_SPACING.total_seconds()  # seconds of event time per batch


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def batch_names(*indexes: int) -> list[str]:
    return [landing.batch_file_name(i) for i in indexes]


def write(directory: Path, *indexes: int, retain: float = 0, pings: int = 5) -> None:
    for i in indexes:
        landing.write_batch(directory, i, seed=1, pings=pings, retain=retain)


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s mtime (not following a symlink) ``seconds`` into the past."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_retention_deletes_only_batch_files_older_than_retain_before_the_newest(tmp_path):
    write(tmp_path, 0, 1, 2, 3)
    foreign = [
        "README.txt",
        "pings-000001.parquet.bak",
        "other-000000.parquet",
        "pings-x.parquet",
        "_SUCCESS",
        ".pings-000001.parquet",  # hidden, but no temporary file's name
    ]
    for name in foreign:
        (tmp_path / name).write_text("not ours\n")
        age(tmp_path / name, 10 * 86400)
    (tmp_path / landing.batch_file_name(9)).mkdir()  # a directory named like a batch file

    # Batch 4 at 120 s: batch 2 is exactly 120 s older (kept), 0 and 1 more (deleted).
    write(tmp_path, 4, retain=2 * SPACING)
    assert names(tmp_path) == sorted([*batch_names(2, 3, 4, 9), *foreign])  # the directory too
    assert (tmp_path / landing.batch_file_name(9)).is_dir()

    # The function itself reports what it deleted.
    removed = landing.prune_landing(tmp_path, 4, SPACING)
    assert removed == [tmp_path / landing.batch_file_name(2)]
    assert landing.prune_landing(tmp_path / "missing", 4, SPACING) == []


def test_symlinks_named_like_batch_files_are_left_and_never_followed(tmp_path):
    landing_dir, outside = tmp_path / "landing", tmp_path / "outside"
    outside.mkdir()
    target = outside / "precious.parquet"
    target.write_text("someone else's data\n")
    write(landing_dir, 0)
    link = landing_dir / landing.batch_file_name(1)
    link.symlink_to(target)
    dangling = landing_dir / landing.batch_file_name(2)
    dangling.symlink_to(outside / "gone.parquet")
    temp_link = landing_dir / ".pings-000003.parquet.abc.tmp"
    temp_link.symlink_to(target)
    for path in (link, dangling, temp_link):
        age(path, 86400)

    write(landing_dir, 1000, retain=SPACING)  # every batch before 999 is old
    # Decision: a symlink is not a file the generator wrote, so it is left (and its target
    # untouched); only the regular batch file 0 went.
    assert names(landing_dir) == [temp_link.name, *batch_names(1, 2, 1000)]
    assert link.is_symlink() and dangling.is_symlink() and temp_link.is_symlink()
    assert target.read_text() == "someone else's data\n"


def test_temporary_files_of_a_killed_generator_go_after_a_minute(tmp_path):
    write(tmp_path, 0)
    stale = tmp_path / ".pings-000001.parquet.k1ll3d_.tmp"
    fresh = tmp_path / ".pings-000002.parquet.wr1t1ng.tmp"  # another writer, under way
    hidden = tmp_path / ".other.tmp"
    for path in (stale, fresh, hidden):
        path.write_bytes(b"partial")
    age(stale, landing.TEMP_MAX_AGE + 30)
    age(hidden, 86400)
    age(fresh, landing.TEMP_MAX_AGE - 30)

    write(tmp_path, 1, retain=landing.RETAIN_SECONDS)
    assert names(tmp_path) == sorted([fresh.name, hidden.name, *batch_names(0, 1)])
    # Even with retain=0, which keeps every batch file.
    age(fresh, landing.TEMP_MAX_AGE + 1)
    write(tmp_path, 2)
    assert names(tmp_path) == sorted([hidden.name, *batch_names(0, 1, 2)])


def test_retain_zero_keeps_everything_and_bad_values_write_nothing(tmp_path, capsys):
    write(tmp_path, 0, 1)
    write(tmp_path, 100_000, retain=0)
    assert names(tmp_path) == batch_names(0, 1, 100_000)

    args = ["--landing", str(tmp_path), "--every", "0", "--pings", "1"]
    assert landing.main([*args, "--batches", "2", "--retain", "0"]) == 0
    assert names(tmp_path) == batch_names(0, 1, 100_000, 100_001, 100_002)

    with pytest.raises(ValueError, match="retain"):
        landing.write_batch(tmp_path, 5, seed=1, retain=-1)
    with pytest.raises(TypeError, match="retain"):
        landing.write_batch(tmp_path, 5, seed=1, retain="60")
    with pytest.raises(SystemExit) as exit_:
        landing.main([*args, "--batches", "1", "--retain", "-5"])
    assert exit_.value.code == 2 and "--retain must be >= 0" in capsys.readouterr().err
    assert names(tmp_path) == batch_names(0, 1, 100_000, 100_001, 100_002)


def test_the_cli_keeps_a_day_of_event_time_by_default_across_restarts(tmp_path, capsys):
    write(tmp_path, 0, 1, 2)
    # A generator stopped for a month: by mtime everything would be old; by event time,
    # nothing is until batches are written again.
    for name in names(tmp_path):
        age(tmp_path / name, 30 * 86400)
    args = ["--landing", str(tmp_path), "--every", "0", "--pings", "1"]
    assert landing.main([*args, "--batches", "1"]) == 0  # continues at 3
    assert names(tmp_path) == batch_names(0, 1, 2, 3)

    # 1,440 batches (86,400 s of event time) later, batch 2 is exactly a day older than
    # the newest (kept); 0 and 1 are older (deleted).
    keep = int(landing.RETAIN_SECONDS // SPACING)
    assert keep == 1440
    assert landing.main([*args, "--batches", "1", "--start", str(2 + keep)]) == 0
    assert names(tmp_path) == batch_names(2, 3, 2 + keep)

    # A restart below the existing files deletes nothing newer than what it writes.
    assert landing.main([*args, "--batches", "1", "--start", "1"]) == 0
    assert names(tmp_path) == batch_names(1, 2, 3, 2 + keep)
    capsys.readouterr()


# --- with Spark ------------------------------------------------------------------------------


def _rows(spark, output: Path) -> int:  # noqa: F811 - a session, passed on
    return spark.read.parquet(str(output)).count()


@pytest.mark.slow
def test_a_stream_keeps_working_when_the_retention_deletes_files_it_read(spark, tmp_path):  # noqa: F811
    root, output, checkpoint = tmp_path / "landing", tmp_path / "out", tmp_path / "checkpoint"
    pings, retain = 20, 2 * SPACING  # the newest three batches are kept

    def start():
        return (
            PingsStream(spark, root)
            .writeStream.format("parquet")
            .option("checkpointLocation", str(checkpoint))
            .start(str(output))
        )

    write(root, 0, 1, 2, retain=retain, pings=pings)
    query = start()
    query.processAllAvailable()
    assert _rows(spark, output) == 3 * pings
    for i in range(3, 7):  # each deletes the oldest, which the query has read
        write(root, i, retain=retain, pings=pings)
        query.processAllAvailable()
    assert names(root) == batch_names(4, 5, 6)
    assert query.isActive and query.exception() is None
    assert _rows(spark, output) == 7 * pings
    query.stop()

    # Restarted from its checkpoint with the files it read gone: only the new ones.
    write(root, 7, 8, retain=retain, pings=pings)
    assert names(root) == batch_names(6, 7, 8)
    query = start()
    query.processAllAvailable()
    assert _rows(spark, output) == 9 * pings
    query.stop()

    # The trade-off: stopped for longer than the retention, it misses what went meanwhile
    # (9 and 10), without failing.
    write(root, 9, 10, 11, 12, 13, retain=retain, pings=pings)
    assert names(root) == batch_names(11, 12, 13)
    query = start()
    query.processAllAvailable()
    assert query.exception() is None
    done = spark.read.parquet(str(output))
    assert done.count() == 12 * pings
    assert done.select("document_id").distinct().count() == 12 * pings
    query.stop()


@pytest.mark.slow
def test_a_file_deleted_after_the_batch_planned_it_is_skipped(spark, tmp_path):  # noqa: F811
    """Spark lists a micro-batch's files when it plans it; a file deleted between that and
    the read fails the batch unless ``ignoreMissingFiles``, which ``PingsStream`` sets. A
    file deleted before the planning is never read, with or without the option."""
    from pyspark.errors import StreamingQueryException

    def run(df, name):
        root = tmp_path / name
        write(root, 0, 1, 2, pings=10)
        counts = []

        def each(batch, batch_id):
            if batch_id == 1:  # planned with file 1: delete it before reading
                (root / landing.batch_file_name(1)).unlink()
            counts.append(batch.count())

        query = (
            df(root)
            .writeStream.foreachBatch(each)
            .option("checkpointLocation", str(tmp_path / f"checkpoint-{name}"))
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination(120)
        return counts

    assert run(lambda root: PingsStream(spark, root, max_files_per_trigger=1), "ours") == [
        10,
        0,
        10,
    ]

    def plain(root):
        reader = spark.readStream.schema(stream_schema()).option("maxFilesPerTrigger", 1)
        return reader.parquet(str(root))

    with pytest.raises(StreamingQueryException, match="(?s)FileNotFound|does not exist"):
        run(plain, "plain")
