"""Retention: outputs of runs past their job's retention are deleted, the run rows stay."""

import threading
from datetime import timedelta

import nbformat
import pytest
from django.conf import settings as django_settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from jobs import services, tasks
from jobs.executor import Outcome
from jobs.models import Run

pytestmark = pytest.mark.django_db

NOW = timezone.now()


@pytest.fixture(autouse=True)
def _default_retention(settings):
    settings.RUN_OUTPUT_RETENTION_DAYS = 90


def finished_run(job, user, tmp_path, ended_days_ago: float) -> Run:
    """A SUCCEEDED run of ``job`` with a stored output .ipynb and HTML, that ended
    ``ended_days_ago`` days before NOW."""
    run = services.claim_run(services.run_now(job, user, enqueue=False).pk, "w1")
    path = tmp_path / f"out-{run.pk}.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    nbformat.write(nb, str(path))
    run = services.finish_run(run, Outcome("succeeded", path))
    assert run.output_key and run.html_key
    Run.objects.filter(pk=run.pk).update(
        finished_at=NOW - timedelta(days=ended_days_ago), output_bytes=1234
    )
    run.refresh_from_db()
    return run


def stored(run: Run) -> bool:
    return default_storage.exists(run.output_key) or default_storage.exists(run.html_key)


def test_an_old_output_is_deleted_and_the_run_row_stays(make_job, alice, tmp_path):
    job = make_job()
    old = finished_run(job, alice, tmp_path, ended_days_ago=91)
    assert stored(old)

    assert services.expire_run_outputs(NOW) == 1

    after = Run.objects.get(pk=old.pk)
    assert not default_storage.exists(old.output_key)
    assert not default_storage.exists(old.html_key)
    assert after.state == Run.State.SUCCEEDED
    assert (after.output_key, after.html_key, after.partial_key) == ("", "", "")
    assert after.output_bytes == 0
    assert after.output_expired_at == NOW
    # The notebook the runs were made from is the job, not its output: never expired.
    assert default_storage.exists(job.latest_version().storage_key)


def test_an_output_within_its_retention_is_kept(make_job, alice, tmp_path):
    recent = finished_run(make_job(), alice, tmp_path, ended_days_ago=89)
    assert services.expire_run_outputs(NOW) == 0
    after = Run.objects.get(pk=recent.pk)
    assert stored(after) and after.output_expired_at is None and after.output_bytes == 1234


def test_a_job_retention_overrides_the_portal_default(make_job, alice, tmp_path):
    weekly = finished_run(make_job(output_retention_days=7), alice, tmp_path, ended_days_ago=8)
    long = finished_run(make_job(output_retention_days=365), alice, tmp_path, ended_days_ago=100)
    forever = finished_run(make_job(output_retention_days=0), alice, tmp_path, ended_days_ago=3650)
    default = finished_run(make_job(), alice, tmp_path, ended_days_ago=100)

    assert services.expire_run_outputs(NOW) == 2

    expired = set(Run.objects.filter(output_expired_at__isnull=False).values_list("pk", flat=True))
    assert expired == {weekly.pk, default.pk}
    assert stored(Run.objects.get(pk=long.pk)) and stored(Run.objects.get(pk=forever.pk))


def test_a_default_of_zero_keeps_outputs_forever_unless_the_job_says(
    make_job, alice, tmp_path, settings
):
    settings.RUN_OUTPUT_RETENTION_DAYS = 0
    kept = finished_run(make_job(), alice, tmp_path, ended_days_ago=3650)
    own = finished_run(make_job(output_retention_days=30), alice, tmp_path, ended_days_ago=31)

    assert services.expire_run_outputs(NOW) == 1

    assert Run.objects.get(pk=kept.pk).output_expired_at is None
    assert Run.objects.get(pk=own.pk).output_expired_at == NOW


def test_active_runs_are_never_touched(make_job, alice, tmp_path):
    job = make_job(output_retention_days=1)
    running = services.claim_run(services.run_now(job, alice, enqueue=False).pk, "w1")
    partial = default_storage.save(f"runs/{running.uuid}/partial.html", _html())
    # Even with an end time (which an active run never has), the state keeps it.
    Run.objects.filter(pk=running.pk).update(
        partial_key=partial, finished_at=NOW - timedelta(days=30)
    )

    assert services.expire_run_outputs(NOW) == 0

    assert Run.objects.get(pk=running.pk).partial_key == partial
    assert default_storage.exists(partial)


def test_a_left_over_partial_output_expires_with_the_run(make_job, alice, tmp_path):
    old = finished_run(make_job(), alice, tmp_path, ended_days_ago=100)
    partial = default_storage.save(f"runs/{old.uuid}/partial.html", _html())
    Run.objects.filter(pk=old.pk).update(partial_key=partial)

    assert services.expire_run_outputs(NOW) == 1

    assert not default_storage.exists(partial)
    assert Run.objects.get(pk=old.pk).partial_key == ""


def test_runs_without_output_are_left_alone(make_job, alice):
    run = services.run_now(make_job(), alice, enqueue=False)
    services.cancel_run(run)
    Run.objects.filter(pk=run.pk).update(finished_at=NOW - timedelta(days=365))
    assert services.expire_run_outputs(NOW) == 0
    assert Run.objects.get(pk=run.pk).output_expired_at is None


def test_expiry_works_in_batches_and_is_idempotent(make_job, alice, tmp_path):
    job = make_job()
    runs = [finished_run(job, alice, tmp_path, ended_days_ago=100 + i) for i in range(5)]

    assert services.expire_run_outputs(NOW, batch_size=2) == 5
    assert services.expire_run_outputs(NOW, batch_size=2) == 0

    assert not any(stored(r) for r in runs)
    assert Run.objects.filter(output_expired_at=NOW).count() == 5


def test_a_run_whose_files_cannot_be_deleted_waits_for_the_next_pass(
    make_job, alice, tmp_path, monkeypatch
):
    job = make_job()
    stuck, fine = (finished_run(job, alice, tmp_path, ended_days_ago=100) for _ in range(2))
    real_delete = FileSystemStorage.delete

    def flaky_delete(storage, name):
        if name == stuck.output_key:
            raise OSError("storage unavailable")
        real_delete(storage, name)

    with monkeypatch.context() as patch:
        patch.setattr(FileSystemStorage, "delete", flaky_delete)
        assert services.expire_run_outputs(NOW, batch_size=1) == 1
    assert Run.objects.get(pk=fine.pk).output_expired_at == NOW
    left = Run.objects.get(pk=stuck.pk)
    assert left.output_expired_at is None and left.output_key == stuck.output_key

    assert services.expire_run_outputs(NOW) == 1
    assert not stored(stuck)


def test_the_beat_task_expires_outputs_on_the_control_queue(make_job, alice, tmp_path):
    entry = django_settings.CELERY_BEAT_SCHEDULE["expire-run-outputs"]
    assert entry["task"] == tasks.expire_run_outputs.name
    assert entry["schedule"] == django_settings.RETENTION_INTERVAL
    assert entry["options"]["expires"] <= django_settings.RETENTION_INTERVAL
    # finished_run ages runs relative to NOW, which is the past by now: ample margin.
    old = finished_run(make_job(), alice, tmp_path, ended_days_ago=100)

    assert tasks.expire_run_outputs.apply().get() == 1

    assert Run.objects.get(pk=old.pk).output_expired_at is not None


def test_the_run_page_says_the_output_expired(make_job, alice, alice_client, tmp_path):
    run = finished_run(make_job(), alice, tmp_path, ended_days_ago=100)
    page = alice_client.get(run.get_absolute_url()).content.decode()
    assert 'id="notebook-frame"' in page and 'id="download-ipynb"' in page

    services.expire_run_outputs(NOW)

    page = alice_client.get(run.get_absolute_url()).content.decode()
    assert f"Output expired on {NOW:%Y-%m-%d}" in page
    assert 'id="notebook-frame"' not in page
    assert 'id="download-ipynb"' not in page and 'id="download-html"' not in page
    download = reverse("runs-download", args=[run.pk, "ipynb"])
    assert alice_client.get(download).status_code == 404


def test_the_job_page_and_form_show_the_retention(make_job, alice_client, settings):
    job = make_job()
    page = alice_client.get(job.get_absolute_url()).content.decode()
    assert "90 days (the portal&#x27;s default) after each run" in page

    form = alice_client.get(reverse("jobs-edit", args=[job.pk])).content.decode()
    assert 'name="output_retention_days"' in form
    assert "the portal's default, 90 days" in form

    job.output_retention_days = 0
    job.save(update_fields=["output_retention_days"])
    page = alice_client.get(job.get_absolute_url()).content.decode()
    assert "forever after each run" in page


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_passes_skip_the_runs_another_pass_holds(make_job, alice, tmp_path):
    job = make_job()
    held, free = (finished_run(job, alice, tmp_path, ended_days_ago=100) for _ in range(2))
    locked, release, done = threading.Event(), threading.Event(), threading.Event()

    def other_pass():
        # Another pass, stopped while it holds ``held``'s row lock.
        try:
            with transaction.atomic():
                Run.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(timeout=60)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=other_pass)
    thread.start()
    try:
        assert locked.wait(timeout=60)
        # Neither waits for the lock nor expires the held run.
        assert services.expire_run_outputs(NOW) == 1
        assert Run.objects.get(pk=free.pk).output_expired_at == NOW
        assert Run.objects.get(pk=held.pk).output_expired_at is None
    finally:
        release.set()
        thread.join()
    assert services.expire_run_outputs(NOW) == 1
    assert not stored(held)


def _html():
    from django.core.files.base import ContentFile

    return ContentFile(b"<html><body>partial</body></html>")
