"""Per-user limits through the pages and the services: jobs, runs queued or running, the
shortest schedule interval, catch-up slots, and rates; staff exempt unless overridden."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from jobs import schedule, services
from jobs.models import Job, NotebookVersion, Run
from quotas.limits import LimitExceeded, limits_for
from quotas.models import UserLimits
from tests.conftest import notebook_bytes
from tests.jobs.test_views import ALL_PARAMS, form_data, upload

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def new_job(**fields):
    """The new-job form's data for trivial.ipynb, with ``fields`` changed."""
    return {**form_data(notebook=upload(), **fields), **ALL_PARAMS}


def test_staff_have_no_limit_unless_an_override_sets_one(alice, staff, settings):
    settings.USER_MAX_RUNNING_RUNS = 3
    assert limits_for(alice).max_running_runs == 3
    assert limits_for(staff).max_running_runs is None
    UserLimits.objects.create(user=staff, max_running_runs=1)
    assert limits_for(staff).max_running_runs == 1
    UserLimits.objects.create(user=alice, max_running_runs=0, max_jobs=None)
    assert limits_for(alice).max_running_runs is None  # 0: no limit
    assert limits_for(alice).max_jobs == settings.USER_MAX_JOBS  # empty: the default


def test_the_job_limit_refuses_a_new_job_on_the_page(alice_client, alice, make_job, settings):
    settings.USER_MAX_JOBS = 2
    make_job()
    make_job()
    files_before = NotebookVersion.objects.count()
    response = alice_client.post(reverse("jobs-new"), new_job())
    assert response.status_code == 200
    assert "limit of 2 jobs" in response.content.decode()
    assert Job.objects.filter(owner=alice).count() == 2
    assert NotebookVersion.objects.count() == files_before
    UserLimits.objects.create(user=alice, max_jobs=3)
    response = alice_client.post(reverse("jobs-new"), new_job())
    assert response.status_code == 302
    assert Job.objects.filter(owner=alice).count() == 3


def test_staff_may_own_more_jobs(staff, settings):
    settings.USER_MAX_JOBS = 1
    for name in ("one", "two"):
        services.create_job(staff, Job(name=name), notebook_bytes("trivial.ipynb"))
    assert Job.objects.filter(owner=staff).count() == 2


def test_a_schedule_more_frequent_than_allowed_is_a_form_error(alice_client, alice, settings):
    settings.USER_MIN_SCHEDULE_INTERVAL = 300
    data = new_job(schedule_kind="cron", cron="*/2 * * * *")
    response = alice_client.post(reverse("jobs-new"), data)
    assert response.status_code == 200
    page = response.content.decode()
    assert "every 2 minutes at times; the shortest interval allowed is 5 minutes" in page
    assert not Job.objects.exists()
    # A burst inside an otherwise daily schedule is caught too.
    data = new_job(schedule_kind="cron", cron="0,1 6 * * *")
    assert "every 1 minute" in alice_client.post(reverse("jobs-new"), data).content.decode()
    ok = new_job(schedule_kind="cron", cron="*/5 * * * *")
    assert alice_client.post(reverse("jobs-new"), ok).status_code == 302


def test_a_lowered_interval_limit_blocks_only_a_changed_schedule(alice, make_job, settings):
    job = make_job(cron="*/10 * * * *")
    settings.USER_MIN_SCHEDULE_INTERVAL = 3600
    job.description = "still every ten minutes"
    services.update_job(job)
    job.cron = "*/20 * * * *"
    with pytest.raises(LimitExceeded) as refused:
        services.update_job(job)
    assert refused.value.field == "cron"
    assert Job.objects.get(pk=job.pk).cron == "*/10 * * * *"


def test_staff_may_schedule_every_minute(staff, settings):
    settings.USER_MIN_SCHEDULE_INTERVAL = 300
    spec = Job(name="busy", schedule_kind="cron", cron="* * * * *")
    assert services.create_job(staff, spec, notebook_bytes("trivial.ipynb")).cron == "* * * * *"


def test_shortest_interval_of_common_schedules():
    assert schedule.shortest_interval("*/5 0 * * *", "UTC", below=0) == 300
    assert schedule.shortest_interval("0 6 * * 1", "UTC", below=0) == 7 * 86400
    assert schedule.shortest_interval("* * * * *", "UTC", below=300) == 60


def test_run_now_past_the_queued_limit_says_why(alice_client, alice, make_job, settings):
    settings.USER_MAX_ACTIVE_RUNS = 2
    job = make_job()
    for _ in range(2):
        assert alice_client.post(reverse("jobs-run", args=[job.pk])).status_code == 302
    response = alice_client.post(reverse("jobs-run", args=[job.pk]), follow=True)
    assert "You have 2 runs queued or running, and your limit is 2" in response.content.decode()
    assert job.runs.count() == 2
    # A finished run makes room again.
    Run.objects.filter(pk=job.runs.first().pk).update(state=Run.State.SUCCEEDED)
    alice_client.post(reverse("jobs-run", args=[job.pk]))
    assert job.runs.count() == 3


def test_rerun_obeys_the_same_limit(alice_client, alice, make_job, settings):
    job = make_job()
    run = services.run_now(job, alice)
    Run.objects.filter(pk=run.pk).update(state=Run.State.FAILED)
    settings.USER_MAX_ACTIVE_RUNS = 1
    services.run_now(job, alice)
    response = alice_client.post(reverse("runs-rerun", args=[run.pk]), follow=True)
    assert "your limit is 1" in response.content.decode()
    assert job.runs.count() == 2


def test_run_now_is_rate_limited(alice_client, alice, make_job, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "run_now": "3/h"}
    job = make_job()
    for _ in range(3):
        alice_client.post(reverse("jobs-run", args=[job.pk]))
    response = alice_client.post(reverse("jobs-run", args=[job.pk]), follow=True)
    assert "Too many requests: at most 3 per hour" in response.content.decode()
    assert job.runs.count() == 3


def test_a_per_user_rate_overrides_the_default(alice, make_job, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "run_now": "1/h"}
    UserLimits.objects.create(user=alice, rates={"run_now": "5/h"})
    job = make_job()
    for _ in range(5):
        services.run_now(job, alice)
    with pytest.raises(LimitExceeded):
        services.run_now(job, alice)


def test_inspection_and_uploads_are_rate_limited(alice_client, alice, make_job, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "inspect": "1/h", "upload": "1/h"}
    inspect = reverse("jobs-inspect")
    assert "Too many" not in alice_client.post(inspect, {"notebook": upload()}).content.decode()
    assert (
        "Too many requests" in alice_client.post(inspect, {"notebook": upload()}).content.decode()
    )
    job = make_job()  # the one upload of this minute
    response = alice_client.post(
        reverse("jobs-upload", args=[job.pk]), {"notebook": upload()}, follow=True
    )
    assert "Too many requests: at most 1 per hour" in response.content.decode()
    assert job.versions.count() == 1


def test_catch_up_is_capped_per_user(alice, settings):
    settings.USER_CATCHUP_MAX_SLOTS = 3
    spec = Job(
        name="hourly",
        schedule_kind="cron",
        cron="0 * * * *",
        catchup=Job.CatchUp.ALL,
        overlap=Job.Overlap.ALLOW,
    )
    services.create_job(alice, spec, notebook_bytes("trivial.ipynb"), now=T0)
    runs = services.dispatch_due_runs(T0 + timedelta(hours=10, minutes=3))
    assert [r.scheduled_for for r in runs] == [T0 + timedelta(hours=h) for h in (8, 9, 10)]


def test_scheduled_slots_past_the_queued_limit_are_skipped_saying_why(alice, settings):
    settings.USER_MAX_ACTIVE_RUNS = 2
    for name in ("a", "b", "c"):
        spec = Job(name=name, schedule_kind="cron", cron="0 * * * *")
        services.create_job(alice, spec, notebook_bytes("trivial.ipynb"), now=T0)
    runs = services.dispatch_due_runs(T0 + timedelta(hours=1, seconds=1))
    assert sorted(r.state for r in runs) == [Run.State.QUEUED, Run.State.QUEUED, Run.State.SKIPPED]
    skipped = next(r for r in runs if r.state == Run.State.SKIPPED)
    assert skipped.state_reason == (
        "Skipped: the owner had 2 runs queued or running, their limit is 2."
    )
    assert skipped.events.get().message == skipped.state_reason


def test_a_per_run_cluster_on_a_backend_not_offered_is_a_form_error(alice_client, alice, settings):
    settings.CLUSTER_BACKENDS = ["local"]
    response = alice_client.post(reverse("jobs-new"), new_job(spark_target="emr_cluster"))
    assert response.status_code == 200
    assert "emr_cluster is not one of the available choices" in response.content.decode()
    assert not Job.objects.exists()
    with pytest.raises(ValidationError):
        services.create_job(
            alice, Job(name="emr", spark_target="emr_cluster"), notebook_bytes("trivial.ipynb")
        )
    settings.CLUSTER_BACKENDS = ["local", "emr"]
    response = alice_client.post(
        reverse("jobs-new"), new_job(spark_target="emr_cluster", cluster_size="1")
    )
    assert response.status_code == 302
