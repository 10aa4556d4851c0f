"""Run state changes: claim, fenced finish, retries, cancel, reaper, exactly-once alerts."""

from datetime import timedelta
from pathlib import Path

import nbformat
import pytest
from django.core import mail
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs import services
from jobs.executor import Outcome
from jobs.models import Run, RunEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(make_job, alice, settings):
    settings.ALERT_ALLOWED_DOMAINS = ["ops.example.com"]  # alerts go to users and this domain
    job = make_job(
        "trivial.ipynb", max_retries=1, notify_on_failure="alice@example.com, on@ops.example.com"
    )
    return services.run_now(job, alice)


def executed_notebook(tmp_path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    path = tmp_path / "out.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_a_run_is_claimed_once(run):
    first = services.claim_run(run.pk, "w1")
    assert first.state == Run.State.RUNNING and first.attempt == 1 and first.worker == "w1"
    assert services.claim_run(run.pk, "w2") is None
    assert Run.objects.get(pk=run.pk).worker == "w1"


def test_a_retry_is_not_claimed_before_its_time(run):
    Run.objects.filter(pk=run.pk).update(not_before=timezone.now() + timedelta(minutes=5))
    assert services.claim_run(run.pk, "w1") is None


def test_success_stores_output_and_html(run, tmp_path):
    claimed = services.claim_run(run.pk, "w1")
    done = services.finish_run(claimed, Outcome("succeeded", executed_notebook(tmp_path)))
    assert done.state == Run.State.SUCCEEDED and done.finished_at
    assert default_storage.exists(done.output_key) and default_storage.exists(done.html_key)
    assert done.output_key == f"runs/{run.uuid}/output.ipynb"
    assert "<html" in default_storage.open(done.html_key).read().decode()


def test_a_stale_attempt_cannot_overwrite_a_newer_one(run, tmp_path):
    first = services.claim_run(run.pk, "w1")
    # The reaper gave the run to another attempt meanwhile.
    Run.objects.filter(pk=run.pk).update(state=Run.State.QUEUED)
    second = services.claim_run(run.pk, "w2")
    assert (
        services.finish_run(first, Outcome("failed", executed_notebook(tmp_path), message="late"))
        is None
    )
    assert services.record_progress(first, services.executor.Progress()) == "lost"
    current = Run.objects.get(pk=run.pk)
    assert current.state == Run.State.RUNNING and current.attempt == second.attempt == 2


def test_failure_records_the_error_and_alerts_once(
    run, tmp_path, django_capture_on_commit_callbacks, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from portal.celery import app

    app.conf.task_always_eager = True
    try:
        claimed = services.claim_run(run.pk, "w1")
        error = {
            "cell_index": 3,
            "ename": "ZeroDivisionError",
            "evalue": "division by zero",
            "traceback": "Traceback\n  line\nZeroDivisionError",
        }
        with django_capture_on_commit_callbacks(execute=True):
            done = services.finish_run(
                claimed,
                Outcome(
                    "failed",
                    executed_notebook(tmp_path),
                    error=error,
                    message="ZeroDivisionError: division by zero",
                ),
            )
        assert done.state == Run.State.FAILED
        assert (done.error_cell_index, done.error_ename) == (3, "ZeroDivisionError")
        assert len(mail.outbox) == 1
        message = mail.outbox[0]
        assert message.to == ["alice@example.com", "on@ops.example.com"]
        assert (
            "ZeroDivisionError" in message.body
            and "Failing cell: In cell 4 of the output notebook" in message.body
        )
        assert f"/runs/{run.pk}/" in message.body
        # A second delivery of the alert task sends nothing.
        assert services.send_run_alert(run.pk) is False
        assert len(mail.outbox) == 1
    finally:
        app.conf.task_always_eager = False


def test_success_alerts_only_when_asked(make_job, alice, tmp_path):
    job = make_job("trivial.ipynb", notify_on_success="")
    run = services.claim_run(services.run_now(job, alice).pk, "w")
    services.finish_run(run, Outcome("succeeded", executed_notebook(tmp_path)))
    assert services.send_run_alert(run.pk) is False and mail.outbox == []


def test_infrastructure_failure_is_retried_with_backoff(run):
    claimed = services.claim_run(run.pk, "w1")
    again = services.finish_run(
        claimed, Outcome("infra_error", message="DeadKernelError: Kernel died")
    )
    assert again.state == Run.State.QUEUED and again.attempt == 1
    assert again.not_before > timezone.now()
    assert "Kernel died" in again.state_reason
    Run.objects.filter(pk=run.pk).update(not_before=timezone.now())
    claimed = services.claim_run(run.pk, "w2")
    last = services.finish_run(claimed, Outcome("infra_error", message="DeadKernelError: again"))
    assert last.state == Run.State.FAILED and last.attempt == 2


def test_notebook_errors_are_not_retried(run, tmp_path):
    claimed = services.claim_run(run.pk, "w1")
    done = services.finish_run(
        claimed, Outcome("failed", executed_notebook(tmp_path), error={"ename": "ValueError"})
    )
    assert done.state == Run.State.FAILED and done.attempt == 1


def test_cancelling_a_queued_run_is_immediate(run):
    done = services.cancel_run(run)
    assert done.state == Run.State.CANCELLED
    assert services.claim_run(run.pk, "w") is None


def test_cancelling_a_running_run_asks_its_worker(run):
    claimed = services.claim_run(run.pk, "w1")
    services.cancel_run(run)
    assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING
    assert services.record_progress(claimed, services.executor.Progress()) == "cancel"


def test_reaper_retries_a_run_whose_worker_died(run, settings):
    claimed = services.claim_run(run.pk, "w1")
    later = timezone.now() + timedelta(seconds=settings.RUN_STALE_AFTER + 1)
    assert services.reap_runs(later) == {
        "cancelled": 0,
        "retried": 1,
        "lost": 0,
        "requeued": 0,
        "released": 0,
    }
    current = Run.objects.get(pk=run.pk)
    assert current.state == Run.State.QUEUED and current.attempt == claimed.attempt
    assert RunEvent.objects.filter(run=run, state=Run.State.LOST).exists()


def test_reaper_marks_a_run_lost_when_no_attempt_remains(make_job, alice, settings):
    job = make_job("trivial.ipynb", max_retries=0)
    run = services.claim_run(services.run_now(job, alice).pk, "w1")
    later = timezone.now() + timedelta(seconds=settings.RUN_STALE_AFTER + 1)
    assert services.reap_runs(later)["lost"] == 1
    assert Run.objects.get(pk=run.pk).state == Run.State.LOST


def test_reaper_leaves_live_runs_alone_and_requeues_lost_messages(run, settings):
    services.claim_run(run.pk, "w1")
    assert services.reap_runs(timezone.now()) == {
        "cancelled": 0,
        "retried": 0,
        "lost": 0,
        "requeued": 0,
        "released": 0,
    }
    other = services.run_now(run.job, None)
    later = timezone.now() + timedelta(seconds=settings.RUN_QUEUED_TIMEOUT + 1)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=later)
    assert services.reap_runs(later)["requeued"] == 1
    assert Run.objects.get(pk=other.pk).enqueued_at == later


def test_reaper_finishes_a_cancel_whose_worker_died(run, settings):
    services.claim_run(run.pk, "w1")
    services.cancel_run(run)
    later = timezone.now() + timedelta(seconds=settings.RUN_STALE_AFTER + 1)
    assert services.reap_runs(later)["cancelled"] == 1
    assert Run.objects.get(pk=run.pk).state == Run.State.CANCELLED


def test_retry_delay_grows_and_is_bounded(settings):
    settings.RUN_RETRY_BACKOFF = 10
    assert 5 <= services.retry_delay(1) <= 10
    assert 10 <= services.retry_delay(2) <= 20
    assert services.retry_delay(30) <= 3600


def test_the_executor_module_does_not_touch_the_database():
    """jobs.executor runs papermill and takes callbacks for everything else: none of its
    imports, at module level or inside functions, reaches Django's database layer, the
    app registry or the portal's models."""
    import ast

    import jobs.executor

    tree = ast.parse(Path(jobs.executor.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    forbidden = ("django", "portal.db", "jobs.models", "jobs.services", "clusters")
    assert not {m for m in imported if m and m.startswith(forbidden)}, imported


def test_the_reaper_deletes_the_partial_output_of_a_run_it_ends(
    run, settings, django_capture_on_commit_callbacks
):
    from django.core.files.base import ContentFile

    services.claim_run(run.pk, "w1")
    key = default_storage.save(f"runs/{run.uuid}/partial.html", ContentFile(b"<p>half</p>"))
    Run.objects.filter(pk=run.pk).update(partial_key=key, attempt=run.max_attempts)
    later = timezone.now() + timedelta(seconds=settings.RUN_STALE_AFTER + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.reap_runs(later)["lost"] == 1
    assert Run.objects.get(pk=run.pk).partial_key == ""
    assert not default_storage.exists(key)
