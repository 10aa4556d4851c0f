"""A real run in a sandboxed kernel records the values its notebook glues."""

import pytest

from jobs import services
from jobs.models import Job, Run
from tests.conftest import notebook_bytes


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.django_db(transaction=True)  # the run's monitor thread writes its heartbeat
def test_a_run_records_what_its_notebook_glues(alice, client):
    job = services.create_job(
        alice,
        Job(name="recorded", parameters={"answer": 7}),
        notebook_bytes("recorded.ipynb"),
        "recorded.ipynb",
    )
    run = services.execute_run(services.run_now(job, alice, enqueue=False).pk)
    assert run.state == Run.State.SUCCEEDED, run.state_reason
    values = {v.name: v for v in run.recorded_values.all()}
    assert list(values) == ["answer", "ratio", "label", "per_os", "chart"]
    assert (values["answer"].kind, values["answer"].number) == ("number", 7.0)
    assert values["ratio"].number == 0.75
    assert (values["label"].kind, values["label"].text) == ("text", "<b>not bold</b>")
    assert values["per_os"].data == {
        "columns": ["os", "pings"],
        "rows": [["Windows", 30], ["Linux", 12]],
    }
    assert values["chart"].kind == "figure"
    assert values["chart"].data["data"][0]["y"] == [30, 12]
    client.force_login(alice)
    page = client.get(run.get_absolute_url()).content.decode()
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold</b>" not in page
