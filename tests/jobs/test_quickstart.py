"""``manage.py quickstart``: demo user, sample data and the example jobs, idempotently."""

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from jobs.management.commands.quickstart import CONTINUOUS_EXAMPLE_JOBS, EXAMPLE_JOBS, EXAMPLES
from jobs.models import Job, Run

pytestmark = pytest.mark.django_db


def test_quickstart_creates_the_demo_and_schedules_the_examples(client):
    out = io.StringIO()
    call_command("quickstart", "--pings", "2000", "--password", "demo-password-1", stdout=out)
    user = get_user_model().objects.get(email="demo@example.com")
    assert "password: demo-password-1" in out.getvalue()
    assert (Path(settings.DATA_DIR) / "sample" / "pings" / "_generate_pings.json").exists()
    shipped = [name for filename, name, _, _ in EXAMPLE_JOBS if (EXAMPLES / filename).exists()]
    shipped += [name for filename, name, _ in CONTINUOUS_EXAMPLE_JOBS]
    assert sorted(Job.objects.filter(owner=user).values_list("name", flat=True)) == sorted(shipped)
    assert all(job.enabled and job.next_run_at for job in Job.objects.filter(continuous=False))
    # The streaming example is continuous and paused: nothing starts until Resume.
    (stream,) = Job.objects.filter(continuous=True)
    assert stream.name == "Windowed counts (streaming)" and not stream.enabled
    assert stream.latest_version().original_name == "stream_windowed_counts.ipynb"
    assert Path(settings.TELEMETRY_STREAM_ROOT).is_dir()
    # The hello world gets a first run at once.
    assert Run.objects.filter(job__name="Telemetry hello world", trigger="manual").count() == 1
    assert client.login(username="demo", password="demo-password-1")

    call_command(
        "quickstart", "--pings", "2000", "--password", "other-password-2", stdout=io.StringIO()
    )
    assert Job.objects.count() == len(shipped) and Run.objects.count() == 1
