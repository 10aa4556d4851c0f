"""Continuous jobs (issue 15): the supervisor keeps exactly one run, restarts with backoff,
pauses and alerts once after too many failures; stop, new versions, the checkpoint."""

from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from jobs import services, tasks
from jobs.executor import Outcome, TickAnswer
from jobs.models import CONTINUOUS_TIMEOUT_SECONDS, Job, Run
from jobs.services import alerts, streams
from portal.celery import app
from quotas.limits import LimitExceeded
from tests.conftest import notebook_bytes
from tests.jobs.test_views import form_data, upload

pytestmark = pytest.mark.django_db

CONTINUOUS = Run.Trigger.CONTINUOUS


@pytest.fixture
def stream_job(make_job, settings, tmp_path):
    settings.STREAMS_ROOT = tmp_path / "streams"
    settings.STREAM_RESTART_BACKOFF = 10.0
    settings.STREAM_RESTART_BACKOFF_MAX = 600.0
    return make_job(
        "trivial.ipynb",
        name="stream",
        continuous=True,
        stream_max_failures=3,
        stream_failure_window_minutes=60,
        notify_on_failure="alice@example.com",
    )


def end(run: Run, state: str, at) -> Run:
    """End the continuous ``run`` in ``state`` at ``at``, as a worker or the reaper would."""
    Run.objects.filter(pk=run.pk).update(state=state, finished_at=at, attempt=1)
    return Run.objects.get(pk=run.pk)


def active(job: Job) -> list[Run]:
    return list(job.runs.filter(trigger=CONTINUOUS, state__in=Run.ACTIVE_STATES))


def test_the_supervisor_keeps_exactly_one_run(stream_job):
    now = timezone.now()
    assert streams.supervise_streams(now) == {"started": 1, "waiting": 0, "paused": 0}
    assert streams.supervise_streams(now) == {"started": 0, "waiting": 0, "paused": 0}
    (run,) = active(stream_job)
    assert run.trigger == CONTINUOUS and run.state == Run.State.QUEUED
    assert run.not_before is None and run.held_since is None
    assert run.timeout_seconds == CONTINUOUS_TIMEOUT_SECONDS


def test_a_second_active_continuous_run_is_refused_by_the_database(stream_job):
    now = timezone.now()
    streams.supervise_streams(now)
    version = stream_job.latest_version()
    # The supervisor's own guard refuses (it looks first) ...
    assert streams.start_run(stream_job, version, now) is None
    # ... and so does the constraint, whoever inserts.
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.build(
            stream_job, trigger=CONTINUOUS, version_id=version.pk, parameters={}, now=now
        ).save()


def test_paused_and_batch_jobs_get_no_continuous_run(stream_job, make_job):
    make_job("trivial.ipynb", name="batch")
    services.set_job_enabled(stream_job, False)
    assert streams.supervise_streams() == {"started": 0, "waiting": 0, "paused": 0}
    assert not Run.objects.exists()


def test_restarts_back_off_exponentially_after_failures(stream_job):
    t0 = timezone.now()
    streams.supervise_streams(t0)
    (run,) = active(stream_job)
    end(run, Run.State.FAILED, t0)
    assert streams.supervise_streams(t0) == {"started": 0, "waiting": 1, "paused": 0}
    (second,) = active(stream_job)
    assert second.not_before == t0 + timedelta(seconds=10)  # STREAM_RESTART_BACKOFF
    assert "Restart after 1 failed run" in second.state_reason
    assert services.claim_run(second.pk, "w") is None  # not before its time
    end(second, Run.State.LOST, t0 + timedelta(seconds=20))
    streams.supervise_streams(t0 + timedelta(seconds=20))
    (third,) = active(stream_job)
    assert third.not_before == t0 + timedelta(seconds=40)  # 20 s after the second failure
    assert [streams.restart_delay(n) for n in (0, 1, 2, 3, 10)] == [0, 10, 20, 40, 600]


def test_a_clean_end_restarts_at_once(stream_job):
    t0 = timezone.now()
    streams.supervise_streams(t0)
    end(active(stream_job)[0], Run.State.FAILED, t0)
    streams.supervise_streams(t0)
    end(active(stream_job)[0], Run.State.SUCCEEDED, t0 + timedelta(seconds=30))
    streams.supervise_streams(t0 + timedelta(seconds=31))
    (run,) = active(stream_job)
    assert run.not_before is None


def test_too_many_failures_in_the_window_pause_the_job_and_alert_once(
    stream_job, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(tasks.send_stream_paused_alert, "delay", lambda *args: sent.append(args))
    t0 = timezone.now() - timedelta(minutes=30)
    for i in range(3):
        streams.supervise_streams(t0 + timedelta(minutes=i))
        end(active(stream_job)[0], Run.State.FAILED, t0 + timedelta(minutes=i))
    with django_capture_on_commit_callbacks(execute=True):
        counts = streams.supervise_streams(t0 + timedelta(minutes=5))
        again = streams.supervise_streams(t0 + timedelta(minutes=6))
    assert counts["paused"] == 1 and again == {"started": 0, "waiting": 0, "paused": 0}
    stream_job.refresh_from_db()
    assert not stream_job.enabled and stream_job.stream_paused_at == t0 + timedelta(minutes=5)
    assert sent == [(stream_job.pk, 3)] and not active(stream_job)
    # Resumed, it starts again: the failures before the pause no longer count.
    services.set_job_enabled(stream_job, True)
    assert streams.supervise_streams(t0 + timedelta(minutes=7))["started"] == 1


def test_failures_outside_the_window_do_not_pause(stream_job):
    t0 = timezone.now() - timedelta(hours=5)
    for _ in range(2):
        streams.supervise_streams(t0)
        end(active(stream_job)[0], Run.State.FAILED, t0)
    streams.supervise_streams(t0 + timedelta(hours=2))
    end(active(stream_job)[0], Run.State.FAILED, t0 + timedelta(hours=2))
    counts = streams.supervise_streams(t0 + timedelta(hours=2, minutes=1))
    assert counts["paused"] == 0 and len(active(stream_job)) == 1


def test_the_paused_alert_goes_to_the_failure_list_and_owner(stream_job, settings):
    settings.ALERT_ALLOWED_DOMAINS = []
    streams.supervise_streams()
    run = end(active(stream_job)[0], Run.State.FAILED, timezone.now())
    Run.objects.filter(pk=run.pk).update(error_ename="KeyError", error_evalue="'x'")
    assert alerts.send_stream_paused_alert(stream_job.pk, 3)
    (message,) = mail.outbox
    assert message.to == ["alice@example.com"]
    assert "paused after 3 failures" in message.subject
    assert "KeyError: 'x'" in message.body


def test_a_failed_continuous_run_sends_no_run_alert(stream_job):
    streams.supervise_streams()
    run = end(active(stream_job)[0], Run.State.FAILED, timezone.now())
    assert not services.send_run_alert(run.pk)
    assert not mail.outbox


def test_continuous_runs_go_to_the_streams_queue(
    stream_job, make_job, alice, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    for task in (tasks.execute_run, tasks.execute_stream_run):
        monkeypatch.setattr(
            task, "apply_async", lambda args, name=task.name, **kw: sent.append((name, args))
        )
    batch = make_job("trivial.ipynb", name="batch")
    with django_capture_on_commit_callbacks(execute=True):
        streams.supervise_streams()
        manual = services.run_now(batch, alice)
    (run,) = active(stream_job)
    assert sent == [
        ("jobs.tasks.execute_stream_run", (run.pk,)),
        ("jobs.tasks.execute_run", (manual.pk,)),
    ]
    route = app.amqp.router.route({}, "jobs.tasks.execute_stream_run")
    assert route["queue"].name == "streams"
    assert app.amqp.router.route({}, "jobs.tasks.execute_run")["queue"].name == "runs"


def test_a_continuous_run_takes_no_batch_capacity(stream_job, make_job, alice, settings):
    settings.USER_MAX_RUNNING_RUNS = 1
    streams.supervise_streams()
    (run,) = active(stream_job)
    assert services.claim_run(run.pk, "streams-worker").state == Run.State.RUNNING
    batch = services.run_now(make_job("trivial.ipynb", name="batch"), alice)
    assert batch.held_since is None  # the continuous run does not count
    assert services.claim_run(batch.pk, "w").state == Run.State.RUNNING


def test_run_now_and_rerun_are_refused_for_a_continuous_job(stream_job, alice):
    with pytest.raises(LimitExceeded):
        services.run_now(stream_job, alice)
    streams.supervise_streams()
    with pytest.raises(LimitExceeded):
        services.rerun(active(stream_job)[0], alice)


def test_a_continuous_job_has_no_schedule_and_no_per_run_cluster():
    job = Job(name="s", continuous=True, cron="0 * * * *")
    with pytest.raises(ValidationError, match="no schedule"):
        job.check_continuous()
    job = Job(name="s", continuous=True, spark_target=Job.SparkTarget.NEW_CLUSTER)
    with pytest.raises(ValidationError, match="embedded local Spark"):
        job.check_continuous()


def test_the_job_form_refuses_a_schedule_for_a_continuous_job(alice_client):
    params = {"param-x": "1", "param-name": "a", "param-ratio": "0.5", "param-items": "[]"}
    params["param-day"] = "2026-05-01"
    data = form_data(notebook=upload(), continuous="on", **params)
    response = alice_client.post(reverse("jobs-new"), data)
    assert response.status_code == 200
    assert "A continuous job has no schedule" in response.content.decode()
    data = form_data(notebook=upload(), continuous="on", schedule_kind="manual", **params)
    response = alice_client.post(reverse("jobs-new"), data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    job = Job.objects.get()
    assert job.continuous and job.stream_max_failures == 5  # the default, left empty


def test_stop_asks_the_worker_and_pauses_the_job(stream_job):
    streams.supervise_streams()
    run = services.claim_run(active(stream_job)[0].pk, "w")
    stopped = streams.stop_run(run)
    assert stopped.state == Run.State.RUNNING and stopped.stop_requested_at is not None
    stream_job.refresh_from_db()
    assert not stream_job.enabled
    # The worker's next heartbeat learns of it.
    assert services.record_progress(run, services.executor.Progress()) == TickAnswer.STOP


def test_a_stopped_run_succeeds_saying_so(stream_job):
    streams.supervise_streams()
    run = services.claim_run(active(stream_job)[0].pk, "w")
    streams.stop_run(run)
    done = services.finish_run(run, Outcome("succeeded", stopped=True, message="Stopped."))
    assert done.state == Run.State.SUCCEEDED
    assert done.state_reason == Run.STOPPED_ON_REQUEST == "Stopped on request."


def test_stop_goes_by_the_row_not_a_stale_copy(stream_job):
    streams.supervise_streams()
    queued = active(stream_job)[0]
    services.claim_run(queued.pk, "w")
    stopped = streams.stop_run(queued)  # its copy still says QUEUED
    assert stopped.state == Run.State.RUNNING and stopped.stop_requested_at is not None
    assert stopped.cancel_requested_at is None


def test_stopping_a_queued_run_cancels_it(stream_job):
    streams.supervise_streams()
    run = streams.stop_run(active(stream_job)[0])
    assert run.state == Run.State.CANCELLED


def test_a_new_version_stops_the_running_run_without_pausing(stream_job, alice):
    streams.supervise_streams()
    run = services.claim_run(active(stream_job)[0].pk, "w")
    version, _ = services.upload_version(stream_job, alice, notebook_bytes("marker.ipynb"))
    run.refresh_from_db()
    stream_job.refresh_from_db()
    assert run.stop_requested_at is not None and stream_job.enabled
    # Once it has ended, the supervisor restarts it on the new version.
    end(run, Run.State.SUCCEEDED, timezone.now())
    streams.supervise_streams()
    (restarted,) = active(stream_job)
    assert restarted.version == version


def test_a_new_version_replaces_the_version_of_a_queued_run(stream_job, alice):
    streams.supervise_streams()
    version, _ = services.upload_version(stream_job, alice, notebook_bytes("marker.ipynb"))
    (run,) = active(stream_job)
    assert run.version == version and run.state == Run.State.QUEUED


def test_the_checkpoint_is_injected_and_reset_moves_to_a_new_one(stream_job, settings):
    streams.supervise_streams()
    run = active(stream_job)[0]
    first = stream_job.checkpoint_dir
    owner = settings.STREAMS_ROOT / str(stream_job.owner_id)
    assert first == owner / f"job-{stream_job.pk}" / "checkpoint-1"
    injected = run.injected_parameters("local[1]")
    assert injected["checkpoint_dir"] == str(first)
    first_output = stream_job.output_dir
    assert injected["output_dir"] == str(first_output) == str(first.parent / "output-1")
    # Refused while a run is active.
    with pytest.raises(streams.CheckpointBusy):
        streams.reset_checkpoint(stream_job)
    streams.prepare_checkpoint(stream_job).joinpath("offsets").write_text("0")
    end(run, Run.State.CANCELLED, timezone.now())
    job = streams.reset_checkpoint(stream_job)
    assert job.checkpoint_generation == 2
    # The worker removes the old generation when it prepares the next run's.
    assert streams.prepare_stream_dirs(job) == (job.checkpoint_dir, job.output_dir)
    assert job.checkpoint_dir.is_dir() and not first.exists()
    assert job.output_dir.is_dir() and not first_output.exists()


def test_reset_checkpoint_page_confirms_then_resets(stream_job, alice_client):
    url = reverse("jobs-reset-checkpoint", args=[stream_job.pk])
    streams.supervise_streams()
    assert "stop it first" in alice_client.get(url).content.decode()
    alice_client.post(url)
    stream_job.refresh_from_db()
    assert stream_job.checkpoint_generation == 1  # refused: a run is active
    streams.stop_run(active(stream_job)[0])
    assert "confirm-reset" in alice_client.get(url).content.decode()
    assert alice_client.post(url).status_code == 302
    stream_job.refresh_from_db()
    assert stream_job.checkpoint_generation == 2


def test_the_job_page_offers_stop_and_the_run_page_stop(stream_job, alice_client):
    streams.supervise_streams()
    run = services.claim_run(active(stream_job)[0].pk, "w")
    page = alice_client.get(stream_job.get_absolute_url()).content.decode()
    assert 'id="stop-job"' in page and 'id="run-now"' not in page
    assert 'id="stop-run"' in alice_client.get(run.get_absolute_url()).content.decode()
    response = alice_client.post(reverse("jobs-stop", args=[stream_job.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.stop_requested_at is not None
