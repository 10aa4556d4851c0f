"""The rules that live on the job and run models: validators, rescheduling, the run
constructor, state sets and who may change a job."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs import services
from jobs.forms import UploadVersionForm
from jobs.models import Job, Run
from tests.conftest import notebook_bytes

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 4, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "not a valid cron"),
        ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
        ({"timezone": "Mars/Base"}, "timezone", "Unknown time zone"),
        ({"notify_on_failure": "a@example.com, nope"}, "notify_on_failure", "'nope' is not"),
        ({"max_retries": 6}, "max_retries", "less than or equal to 5"),
    ],
)
def test_the_model_fields_validate_themselves(alice, fields, field, message):
    job = Job(owner=alice, name="x", **fields)
    with pytest.raises(ValidationError) as caught:
        job.full_clean()
    assert message in " ".join(caught.value.message_dict[field])


def test_clean_normalises_the_cron_expression(alice):
    job = Job(owner=alice, name="x", schedule_kind="cron", cron=" 0   6 * *  * ")
    job.full_clean()
    assert job.cron == "0 6 * * *"


def test_reschedule_moves_the_next_run_only_for_enabled_scheduled_jobs(alice):
    job = Job(owner=alice, name="x", schedule_kind="cron", cron="0 * * * *")
    job.reschedule(T0)
    assert job.next_run_at == datetime(2026, 5, 4, 11, tzinfo=UTC)
    job.enabled = False
    job.reschedule(T0)
    assert job.next_run_at is None
    manual = Job(owner=alice, name="y")
    manual.reschedule(T0)
    assert manual.schedule_kind == Job.ScheduleKind.MANUAL and manual.next_run_at is None


def test_update_job_keeps_a_slot_the_dispatcher_advanced_when_the_schedule_did_not_change(
    make_job,
):
    job = make_job(cron="0 * * * *")
    edited = Job.objects.get(pk=job.pk)  # as a form holds it
    later = T0 + timedelta(days=3)
    Job.objects.filter(pk=job.pk).update(next_run_at=later)  # the dispatcher moved on
    edited.name = "renamed"
    services.update_job(edited)
    job.refresh_from_db()
    assert (job.name, job.next_run_at) == ("renamed", later)
    edited.cron = "30 * * * *"
    services.update_job(edited)
    job.refresh_from_db()
    assert job.next_run_at.minute == 30 and job.next_run_at != later


def test_for_slot_builds_queued_or_skipped_runs_with_the_jobs_settings(make_job):
    job = make_job(cron="0 * * * *", max_retries=2, timeout_seconds=120, parameters={"x": 3})
    version = job.latest_version()
    queued = Run.for_slot(job, T0, version.pk, active=False, now=T0)
    assert (queued.state, queued.enqueued_at, queued.finished_at) == (Run.State.QUEUED, T0, None)
    assert (queued.max_attempts, queued.timeout_seconds, queued.parameters) == (3, 120, {"x": 3})
    assert (queued.trigger, queued.scheduled_for) == (Run.Trigger.SCHEDULE, T0)
    assert queued.creation_message == "Created (Schedule)."
    skipped = Run.for_slot(job, T0, version.pk, active=True, now=T0)
    assert (skipped.state, skipped.enqueued_at, skipped.finished_at) == (
        Run.State.SKIPPED,
        None,
        T0,
    )
    assert skipped.creation_message == Run.SKIPPED_WHILE_ACTIVE
    job.overlap = Job.Overlap.ALLOW
    assert Run.for_slot(job, T0, version.pk, active=True, now=T0).state == Run.State.QUEUED


def test_failure_states_and_their_predicates():
    assert {s for s in Run.State if Run(state=s).is_failure} == {
        Run.State.FAILED,
        Run.State.TIMED_OUT,
        Run.State.LOST,
    }
    assert set(Run.FAILURE_STATES) < set(Run.FINAL_STATES)
    assert not Run(state=Run.State.SKIPPED).expects_output


def test_only_the_owner_and_staff_may_change_a_job(make_job, alice, bob, staff):
    job = make_job()
    assert job.can_change(alice) and job.can_change(staff) and not job.can_change(bob)
    assert list(Run.objects.owned_by(bob)) == []


def test_every_notebook_upload_checks_size_before_reading(alice_client, make_job, settings):
    job = make_job()
    settings.NOTEBOOK_MAX_BYTES = 100
    big = notebook_bytes("trivial.ipynb")
    assert len(big) > 100
    form = UploadVersionForm(files={"notebook": SimpleUploadedFile("n.ipynb", big)})
    assert not form.is_valid() and "notebooks may be at most" in form.errors["notebook"][0]
    response = alice_client.post(
        reverse("jobs-inspect"), {"notebook": SimpleUploadedFile("n.ipynb", big)}
    )
    assert "notebooks may be at most" in response.content.decode()
    response = alice_client.post(
        reverse("jobs-upload", args=[job.pk]),
        {"notebook": SimpleUploadedFile("n.ipynb", big)},
        follow=True,
    )
    assert "notebooks may be at most" in response.content.decode()
    assert job.versions.count() == 1
