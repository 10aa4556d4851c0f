"""Fail closed: without a sandbox no notebook runs, staff are told, and switching the
sandbox off is an explicit, visible choice."""

import time

import pytest
from django.urls import reverse

from jobs import services
from jobs.models import Run
from portal import sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_bwrap(monkeypatch):
    """This host cannot make a sandbox: the probe's answer, as if bwrap were missing."""
    monkeypatch.setattr(
        sandbox,
        "_probe",
        (time.monotonic(), "bwrap and setpriv not found: install the Debian packages"),
    )


def test_a_run_fails_with_the_reason_when_no_sandbox_can_be_made(
    no_bwrap, make_job, alice, staff, client
):
    run = services.execute_run(services.run_now(make_job("trivial.ipynb"), alice, enqueue=False).pk)
    assert run.state == Run.State.FAILED and run.attempt == 1
    assert run.state_reason.startswith(sandbox.FAILURE_PREFIX) and "bwrap" in run.state_reason
    assert not run.output_key, "no kernel started, nothing to store"
    client.force_login(staff)
    page = client.get(reverse("operations")).content.decode()
    assert "1 run failed in the last 24 hours because its worker could not make a sandbox" in page


@pytest.mark.django_db(transaction=True)  # the run's monitor thread writes its heartbeat
def test_with_the_sandbox_switched_off_notebooks_run_and_staff_see_it_in_red(
    settings, make_job, alice, staff, client
):
    settings.KERNEL_SANDBOX = "none"
    run = services.execute_run(services.run_now(make_job("trivial.ipynb"), alice, enqueue=False).pk)
    assert run.state == Run.State.SUCCEEDED, run.state_reason
    client.force_login(staff)
    for url in (reverse("dashboard"), reverse("admin:index"), reverse("admin:jobs_job_changelist")):
        assert "Notebooks run unsandboxed" in client.get(url).content.decode(), url
    client.force_login(alice)
    assert "Notebooks run unsandboxed" not in client.get(reverse("dashboard")).content.decode()
    settings.KERNEL_SANDBOX = "bwrap"
    client.force_login(staff)
    assert "Notebooks run unsandboxed" not in client.get(reverse("dashboard")).content.decode()
