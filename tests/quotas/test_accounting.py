"""What each run records (wall time, CPU time from its cgroup, node-hours of its own
cluster), and the 80% budget e-mail."""

import os
import subprocess
import sys
from datetime import timedelta
from smtplib import SMTPServerDisconnected
from types import SimpleNamespace

import pytest
import time_machine
from django.core import mail
from django.core.mail import EmailMessage

from jobs import services as job_services
from jobs.models import Run
from jobs.services.attempt import SparkTarget
from portal import sandbox as sb
from quotas import usage
from quotas.models import BudgetNotice, UserLimits
from tests.quotas.conftest import NOW

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(make_job, alice):
    return job_services.run_now(make_job(), alice, enqueue=False)


def attempt(run, started_at, cpu=None, cluster=None, owned=True):
    """What ``record_run_usage`` reads of an attempt, as ``execute_run`` leaves it."""
    run.started_at = started_at
    target = SparkTarget("sc://x", cluster, owned=owned) if cluster else SparkTarget("local[2]")
    return SimpleNamespace(run=run, target=target, cpu_seconds=cpu)


def test_usage_is_summed_over_attempts(run, make_cluster, alice):
    cluster = make_cluster(alice, NOW - timedelta(hours=2), hours=1.5, size=2)  # 3 node-hours
    usage.record_run_usage(
        attempt(run, NOW - timedelta(seconds=90), cpu=12.5, cluster=cluster), NOW
    )
    run.refresh_from_db()
    assert (run.wall_seconds, run.cpu_seconds, run.node_hours) == (90.0, 12.5, 3.0)
    # A second attempt, on a host without CPU accounting and on the embedded Spark.
    later = NOW + timedelta(minutes=10)
    usage.record_run_usage(attempt(run, later - timedelta(seconds=30)), later)
    run.refresh_from_db()
    assert (run.wall_seconds, run.cpu_seconds, run.node_hours) == (120.0, 12.5, 3.0)


def test_cpu_time_is_left_empty_rather_than_invented(run):
    usage.record_run_usage(attempt(run, NOW - timedelta(seconds=5)), NOW)
    run.refresh_from_db()
    assert (run.wall_seconds, run.cpu_seconds, run.node_hours) == (5.0, None, None)


def test_a_shared_cluster_is_not_the_runs_own(run, make_cluster, alice):
    team = make_cluster(alice, NOW - timedelta(hours=5))  # a running cluster the job uses
    usage.record_run_usage(attempt(run, NOW - timedelta(seconds=5), cluster=team, owned=False), NOW)
    run.refresh_from_db()
    assert run.node_hours is None


def test_recording_never_fails_the_run(run, monkeypatch, caplog):
    monkeypatch.setattr(Run.objects, "filter", None)  # any database call breaks
    usage.record_run_usage(attempt(run, NOW - timedelta(seconds=5), cpu=1.0), NOW)
    assert "could not record the usage" in caplog.text


@pytest.mark.sandbox
def test_a_sandbox_reads_its_cpu_time_from_its_cgroup_before_removing_it(settings):
    box = sb.Sandbox(sb.SandboxSpec(name=f"t-cpu-{os.getpid()}", uid=sb.uid_for(4242))).prepare()
    try:
        if box.cgroup is None:
            pytest.skip("no cgroup on this host")
        busy = "import time; sum(i * i for i in range(3_000_000)); print(time.process_time())"
        proc = box.popen([sys.executable, "-c", busy], {"PATH": os.defpath}, stdout=subprocess.PIPE)
        out, _ = proc.communicate(timeout=120)
        own = float(out.decode().strip().splitlines()[-1])
    finally:
        box.destroy()
    assert not box.cgroup.exists()
    # The cgroup counts the process's own CPU time, plus its start (and bwrap's).
    assert box.cpu_seconds is not None and own > 0.05
    assert own <= box.cpu_seconds < own + 5


@pytest.mark.sandbox
@pytest.mark.django_db(transaction=True)  # the run's monitor thread writes its heartbeat
def test_an_executed_run_records_its_time_and_its_kernels_cpu_time(make_job, alice):
    if sb.Cgroup.locate("probe") is None:
        pytest.skip("no cgroup on this host")
    run = job_services.run_now(make_job("trivial.ipynb"), alice, enqueue=False)
    run = job_services.execute_run(run.pk)
    assert run.state == Run.State.SUCCEEDED, run.state_reason
    # At least the kernel's start (an interpreter importing ipykernel) was accounted.
    assert 0.1 < run.cpu_seconds and 0 < run.wall_seconds and run.node_hours is None


def test_without_a_cgroup_there_is_no_cpu_figure(settings):
    settings.SANDBOX_CGROUPS = False
    box = sb.Sandbox(sb.SandboxSpec(name=f"t-nocg-{os.getpid()}", uid=sb.uid_for(4242)))
    assert box.cgroup is None
    box.destroy()
    assert box.cpu_seconds is None


# --- The 80% e-mail ----------------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_the_warning_goes_out_once_at_80_percent(alice, make_cluster, on_commit_tasks, settings):
    UserLimits.objects.create(user=alice, monthly_node_hours=10, monthly_cost=100)
    settings.CLUSTER_PRICE_PER_NODE_HOUR = 1.0
    make_cluster(alice, NOW - timedelta(days=2), hours=7.9, price=1.0)
    assert on_commit_tasks(usage.warn_all_budgets, NOW) == 0  # 79%
    make_cluster(alice, NOW - timedelta(days=1), hours=0.1, price=1.0)
    assert on_commit_tasks(usage.warn_budgets, alice.pk, NOW) == ["node_hours"]  # 80%
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [alice.email]
    assert "80% of your node-hours budget for November 2026" in mail.outbox[0].subject
    assert "8.0 of 10.0 node-hours" in mail.outbox[0].body and "/usage/" in mail.outbox[0].body
    assert on_commit_tasks(usage.warn_all_budgets, NOW) == 0
    assert usage.send_budget_warning(alice.pk, "node_hours", NOW) is False  # a late duplicate
    assert len(mail.outbox) == 1
    notice = BudgetNotice.objects.get()
    assert (notice.month.isoformat(), notice.budget, notice.percent) == (
        "2026-11-01",
        "node_hours",
        80,
    )
    # Next month starts afresh.
    assert on_commit_tasks(usage.warn_all_budgets, NOW + timedelta(days=15)) == 0


@time_machine.travel(NOW, tick=False)
def test_a_run_on_its_own_cluster_checks_the_budget_as_it_ends(
    run, alice, make_cluster, on_commit_tasks
):
    UserLimits.objects.create(user=alice, monthly_node_hours=4)
    cluster = make_cluster(alice, NOW - timedelta(hours=2), hours=2, size=2)  # 4: 100%
    on_commit_tasks(
        usage.record_run_usage, attempt(run, NOW - timedelta(hours=2), cluster=cluster), NOW
    )
    assert len(mail.outbox) == 1 and "100% of your node-hours budget" in mail.outbox[0].subject


def test_a_failed_send_leaves_no_notice_and_the_retry_sends_once(alice, make_cluster, monkeypatch):
    UserLimits.objects.create(user=alice, monthly_node_hours=10)
    make_cluster(alice, NOW - timedelta(days=1), hours=9)
    real_send = EmailMessage.send

    def broken(self, *args, **kwargs):
        raise SMTPServerDisconnected("mail server went away")

    monkeypatch.setattr(EmailMessage, "send", broken)
    with pytest.raises(OSError):
        usage.send_budget_warning(alice.pk, "node_hours", NOW)
    assert not BudgetNotice.objects.exists()
    monkeypatch.setattr(EmailMessage, "send", real_send)
    assert usage.send_budget_warning(alice.pk, "node_hours", NOW) is True
    assert usage.send_budget_warning(alice.pk, "node_hours", NOW) is False
    assert len(mail.outbox) == 1


def test_the_periodic_pass_is_on_beats_schedule(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["warn-budgets"]
    assert entry["task"] == "quotas.tasks.warn_budgets"
    assert entry["options"]["expires"] <= entry["schedule"]
