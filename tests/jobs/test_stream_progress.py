"""Live metrics of continuous runs (issue 15): the worker tails the kernel's progress file
safely, stores the recent points fenced by the attempt, serves them to the run page's
chart, and the operations page flags a stalled stream."""

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Run
from jobs.services import streams
from jobs.services.attempt import record_stream_progress
from jobs.stream_progress import MAX_POINTS, PROGRESS_FILE_NAME, ProgressTail, clean_line

UIDS = {os.geteuid()}


def line(batch: int, second: int = 0, **fields) -> bytes:
    record = {
        "timestamp": f"2026-12-03T10:00:{second:02d}.000Z",
        "id": "0f1e2d3c-aaaa-bbbb-cccc-000000000000",
        "name": "pings",
        "batchId": batch,
        "numInputRows": 10,
        "inputRowsPerSecond": 10.0,
        "processedRowsPerSecond": 20.0,
        "durationMs": 500,
        "watermark": "2026-12-03T09:59:00.000Z",
        "stateRows": 3,
        "sources": [{"description": "FileStreamSource[x]", "endOffset": '{"logOffset":4}'}],
        **fields,
    }
    return json.dumps(record).encode() + b"\n"


@pytest.fixture
def sandbox_dir(tmp_path):
    (tmp_path / "home").mkdir()
    return tmp_path


def tail_of(root) -> ProgressTail:
    return ProgressTail(root, ("home", PROGRESS_FILE_NAME), UIDS)


def test_the_tail_reads_new_lines_only_and_waits_for_a_partial_last_line(sandbox_dir):
    path = sandbox_dir / "home" / PROGRESS_FILE_NAME
    tail = tail_of(sandbox_dir)
    assert not tail.poll()  # no file yet
    first, second = line(0, 1), line(1, 2)
    path.write_bytes(first + second[:20])
    assert tail.poll()
    assert [p["batchId"] for p in tail.points] == [0]
    assert not tail.poll()  # only the partial line is new: it waits
    with path.open("ab") as fh:
        fh.write(second[20:] + line(2, 3))
    assert tail.poll()
    assert [p["batchId"] for p in tail.points] == [0, 1, 2]
    point = tail.points[-1]
    assert point["query"] == "pings" and point["inputRowsPerSecond"] == 10.0
    assert point["durationMs"] == 500 and point["watermark"] == "2026-12-03T09:59:00Z"
    assert tail.last_batch_at == datetime(2026, 12, 3, 10, 0, 3, tzinfo=UTC)
    stored = tail.stored()
    assert "sources" not in stored["points"][0]
    assert stored["sources"] == {
        "pings": [{"description": "FileStreamSource[x]", "endOffset": '{"logOffset":4}'}]
    }


def test_idle_events_count_as_signs_of_life_not_batches(sandbox_dir):
    path = sandbox_dir / "home" / PROGRESS_FILE_NAME
    idle = {"timestamp": "2026-12-03T10:00:30.000Z", "id": "0f1e2d3c-aaaa", "idle": True}
    path.write_bytes(line(0, 1) + json.dumps(idle).encode() + b"\n")
    tail = tail_of(sandbox_dir)
    assert tail.poll()
    assert len(tail.points) == 1
    assert tail.last_batch_at.second == 1 and tail.last_event_at.second == 30
    assert tail.stored()["events"] == [
        {"t": "2026-12-03T10:00:01Z", "query": "pings"},
        {"t": "2026-12-03T10:00:30Z", "query": "0f1e2d3c"},
    ]


def test_garbage_is_dropped_and_values_are_checked(sandbox_dir):
    path = sandbox_dir / "home" / PROGRESS_FILE_NAME
    hostile = line(1, 2, inputRowsPerSecond="lots", name="x" * 5000, sources="nope")
    path.write_bytes(b"not json\n[1, 2]\n" + b'{"timestamp": "yesterday"}\n' + hostile)
    tail = tail_of(sandbox_dir)
    assert tail.poll()
    (point,) = tail.points
    assert point["inputRowsPerSecond"] is None and len(point["query"]) == 200
    assert point["sources"] == []
    assert clean_line(b"x" * 10_000) is None


def test_a_symlink_or_a_fifo_is_never_read(sandbox_dir, tmp_path_factory):
    secret = tmp_path_factory.mktemp("secret") / "secret.jsonl"
    secret.write_bytes(line(7))
    path = sandbox_dir / "home" / PROGRESS_FILE_NAME
    path.symlink_to(secret)
    tail = tail_of(sandbox_dir)
    assert not tail.poll() and not tail.points
    path.unlink()
    # A symlinked directory on the way is refused too.
    os.rename(sandbox_dir / "home", sandbox_dir / "real-home")
    (sandbox_dir / "home").symlink_to(secret.parent)
    secret.rename(secret.parent / PROGRESS_FILE_NAME)
    assert not tail.poll() and not tail.points
    (sandbox_dir / "home").unlink()
    (sandbox_dir / "home").mkdir()
    os.mkfifo(path)
    assert not tail.poll()  # and it does not block


def test_a_file_of_another_uid_is_not_read(sandbox_dir):
    (sandbox_dir / "home" / PROGRESS_FILE_NAME).write_bytes(line(0))
    assert not ProgressTail(sandbox_dir, ("home", PROGRESS_FILE_NAME), {os.geteuid() + 1}).poll()


def test_an_emptied_file_is_read_from_its_start_and_points_are_bounded(sandbox_dir):
    path = sandbox_dir / "home" / PROGRESS_FILE_NAME
    path.write_bytes(b"".join(line(i, i % 60) for i in range(MAX_POINTS + 20)))
    tail = tail_of(sandbox_dir)
    tail.poll()
    assert len(tail.points) == MAX_POINTS and tail.points[-1]["batchId"] == MAX_POINTS + 19
    path.write_bytes(line(1000, 5))  # the kernel emptied it past its size limit
    assert tail.poll()
    assert tail.points[-1]["batchId"] == 1000


@pytest.mark.django_db
def test_the_points_are_stored_only_while_the_attempt_owns_the_run(make_job, sandbox_dir):
    job = make_job("trivial.ipynb", continuous=True)
    run = streams.start_run(job, job.latest_version(), timezone.now())
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, attempt=1)
    run.refresh_from_db()
    (sandbox_dir / "home" / PROGRESS_FILE_NAME).write_bytes(line(0, 1) + line(1, 2))
    tail = tail_of(sandbox_dir)
    tail.poll()
    assert record_stream_progress(run, tail)
    run.refresh_from_db()
    assert [p["batchId"] for p in run.stream_progress["points"]] == [0, 1]
    assert run.last_batch_at == tail.last_batch_at == run.stream_event_at
    assert run.stream_rates() == {"input": 10.0, "processed": 20.0}
    Run.objects.filter(pk=run.pk).update(attempt=2)  # taken over by another attempt
    assert not record_stream_progress(run, tail)


def running_stream(make_job, name="stream", **fields):
    job = make_job("trivial.ipynb", name=name, continuous=True)
    run = streams.start_run(job, job.latest_version(), timezone.now())
    Run.objects.filter(pk=run.pk).update(
        state=Run.State.RUNNING, attempt=1, started_at=timezone.now(), **fields
    )
    return job, Run.objects.get(pk=run.pk)


@pytest.mark.django_db
def test_the_endpoint_serves_the_points_to_the_owner_and_staff_only(
    make_job, client, alice, bob, staff
):
    points = [{"t": "2026-12-03T10:00:01Z", "query": "pings", "inputRowsPerSecond": 5.0}]
    job, run = running_stream(make_job, stream_progress={"points": points, "sources": {}})
    job.visibility = "signed_in"
    job.save(update_fields=["visibility"])
    url = reverse("runs-stream-progress", args=[run.pk])
    for user in (alice, staff):
        client.force_login(user)
        data = client.get(url).json()
        assert data["active"] is True and data["points"] == points
    client.force_login(bob)  # the job is shared with him, its metrics are not
    assert client.get(reverse("runs-detail", args=[run.pk])).status_code == 200
    assert "stream-chart" not in client.get(reverse("runs-detail", args=[run.pk])).content.decode()
    assert client.get(url).status_code == 404
    client.force_login(alice)
    page = client.get(reverse("runs-detail", args=[run.pk])).content.decode()
    assert 'id="stream-chart"' in page and "jobs/stream-chart.js" in page
    assert "plotly/plotly.min.js" in page


def batches(now, every, count, query="q"):
    """``count`` batch points of ``query``, ``every`` seconds apart, the last at ``now``."""
    return [
        {
            "t": (now - timedelta(seconds=every * (count - 1 - i))).isoformat(),
            "query": query,
            "inputRowsPerSecond": 12.5,
            "processedRowsPerSecond": 40.0,
        }
        for i in range(count)
    ]


@pytest.mark.django_db
def test_the_operations_page_flags_a_stalled_stream(make_job, client, staff, settings):
    settings.STREAM_STALLED_INTERVALS = 3
    settings.STREAM_STALLED_AFTER = 60
    settings.RUN_HEARTBEAT_INTERVAL = 5
    now = timezone.now()
    _, healthy = running_stream(
        make_job,
        name="healthy",
        last_batch_at=now - timedelta(seconds=5),
        stream_event_at=now - timedelta(seconds=5),
        stream_progress={"points": batches(now - timedelta(seconds=5), 30, 4)},
    )
    _, stalled = running_stream(
        make_job,
        name="stuck",
        last_batch_at=now - timedelta(minutes=10),
        stream_event_at=now - timedelta(minutes=10),
    )
    make_job("trivial.ipynb", name="paused", continuous=True, enabled=False)
    client.force_login(staff)
    page = client.get(reverse("operations")).content.decode()
    assert "Continuous jobs" in page
    rows = {
        job_name: page.split(f">{job_name}</a>")[1].split("</tr>")[0]
        for job_name in ("healthy", "stuck", "paused")
    }
    assert "12.5" in rows["healthy"] and "40.0" in rows["healthy"]
    assert "30 s" in rows["healthy"]  # its trigger interval, measured
    assert "stalled" not in rows["healthy"]
    assert "stalled" in rows["stuck"] and "600 s" in rows["stuck"]
    assert "paused" in rows["paused"]
    assert healthy.stream_stalled(now, 3, 60) is False
    assert stalled.stream_stalled(now, 3, 60) is True
    # Idle (no new data) is not stalled: an idle event is a sign of life.
    stalled.stream_event_at = now
    assert stalled.stream_stalled(now, 3, 60) is False


@pytest.mark.django_db
def test_stalled_is_counted_in_the_jobs_own_trigger_intervals(make_job, settings):
    """A stream with a 2-minute trigger is not stalled after 3 minutes of silence; one
    with a 5-second trigger is stalled after 35 s (3 x max(5, 10 s idle events) + one
    5 s heartbeat)."""
    settings.RUN_HEARTBEAT_INTERVAL = 5
    now = timezone.now()
    slow_start = now - timedelta(minutes=3)
    _, slow = running_stream(
        make_job,
        name="slow",
        stream_event_at=slow_start,
        stream_progress={"points": batches(slow_start, 120, 5)},
    )
    assert slow.stream_interval() == 120
    assert slow.stream_stalled(now, 3, 60) is False
    assert slow.stream_stalled(now + timedelta(minutes=4), 3, 60) is True
    quiet = now - timedelta(seconds=30)
    _, fast = running_stream(
        make_job,
        name="fast",
        stream_event_at=quiet,
        stream_progress={"points": batches(quiet, 5, 10) + batches(quiet, 7, 3, query="b")},
    )
    assert fast.stream_interval() == 5  # the median over both queries' gaps
    assert fast.stream_stalled(now, 3, 600) is False  # 30 s <= 3 x 10 s + 5 s
    assert fast.stream_stalled(now + timedelta(seconds=6), 3, 600) is True
    # Before two batches the fallback (seconds) applies.
    _, fresh = running_stream(make_job, name="fresh", stream_event_at=now - timedelta(seconds=90))
    assert fresh.stream_interval() is None
    assert fresh.stream_stalled(now, 3, 60) is True
    assert fresh.stream_stalled(now, 3, 120) is False


@pytest.mark.django_db
def test_a_stream_with_rare_data_is_measured_by_its_idle_reports(make_job, settings):
    """Data once an hour, idle reports every 10 s between: the interval is 10 s, so a
    hang is flagged within a minute, not after three hours."""
    settings.RUN_HEARTBEAT_INTERVAL = 5
    now = timezone.now()
    hourly = batches(now - timedelta(minutes=1), 3600, 3)
    idle = [
        {"t": (now - timedelta(seconds=60 - 10 * i)).isoformat(), "query": "q"} for i in range(6)
    ]
    _, run = running_stream(
        make_job,
        stream_event_at=now - timedelta(seconds=10),
        stream_progress={"points": hourly, "events": idle},
    )
    assert run.stream_interval() == 10
    assert run.stream_stalled(now, 3, 120) is False
    assert run.stream_stalled(now + timedelta(seconds=30), 3, 120) is True  # 40 s > 35 s
    # Runs stored before ``events`` existed are measured by their batches.
    run.stream_progress = {"points": hourly}
    assert run.stream_interval() == 3600
