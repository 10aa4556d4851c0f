"""A run travels through Redis and a real worker process to SUCCEEDED."""

import pytest

from jobs import services
from jobs.models import Run
from tests.processes import Worker, flush_broker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_run_now_executes_on_a_real_worker(make_job, alice):
    flush_broker()
    worker = Worker()
    try:
        job = make_job("trivial.ipynb", parameters={"x": 21})
        run = services.run_now(job, alice)
        done = wait_for(lambda: Run.objects.filter(pk=run.pk, state__in=Run.FINAL_STATES).first(), timeout=90, message="run to finish")
        assert done.state == Run.State.SUCCEEDED, done.state_reason
        assert done.attempt == 1
        assert done.output_key and done.html_key
        assert done.cells_done == done.cells_total > 0
    finally:
        worker.stop()
