"""Fair share on real workers: a user at their concurrency limit holds no worker process,
another user's run goes ahead, and every held run still ends, once."""

import pytest

from jobs import services
from jobs.models import Run, RunEvent
from quotas.models import UserLimits
from tests.integration.conftest import wait_run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_greedy_user_waits_while_another_users_run_goes_ahead(make_job, alice, bob, procs):
    UserLimits.objects.create(user=alice, max_running_runs=1)
    mine = make_job("sleepy.ipynb", parameters={"seconds": 2.0}, max_retries=0)
    theirs = make_job("trivial.ipynb", owner=bob, max_retries=0)
    procs.worker(queues="runs,control", concurrency=2)
    alice_runs = [services.run_now(mine, alice) for _ in range(3)]
    bobs = services.run_now(theirs, bob)

    done = [wait_run(run.pk, Run.FINAL_STATES, timeout=150, procs=procs) for run in alice_runs]
    bobs = wait_run(bobs.pk, Run.FINAL_STATES, timeout=60, procs=procs)
    assert [run.state for run in done] == [Run.State.SUCCEEDED] * 3
    assert bobs.state == Run.State.SUCCEEDED
    assert all(run.attempt == 1 and run.held_since is None for run in done)
    # Alice's runs never overlapped, and ran in the order they were queued.
    spans = sorted((run.started_at, run.finished_at, run.pk) for run in done)
    assert [pk for _, _, pk in spans] == [run.pk for run in alice_runs]
    for (_, end, _), (start, _, _) in zip(spans, spans[1:], strict=False):
        assert start >= end
    # Bob did not wait for all of Alice's runs: his started before her last one.
    assert bobs.started_at < spans[-1][0]
    waits = RunEvent.objects.filter(run__in=alice_runs, message__startswith="Waiting: 1 of")
    assert waits.exists()
