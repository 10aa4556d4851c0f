"""A continuous job's checkpoint_dir and output_dir (``notebooks.STREAM_PARAMETERS``): the
portal injects the job's own directories into its runs, so the job form shows them
read-only, the API refuses values for them and the services store none."""

import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs import notebooks, services
from jobs.forms import JobForm, ParametersForm
from jobs.models import Job, Run
from tests.api.test_jobs import create, patch
from tests.conftest import notebook_bytes
from tests.jobs.test_views import form_data, upload

pytestmark = pytest.mark.django_db

#: The values the trivial notebook's other parameters take in the form.
OTHER_PARAMS = {
    "param-x": "1",
    "param-name": "a",
    "param-ratio": "0.5",
    "param-items": "[]",
    "param-day": "2026-05-01",
}


def stream_notebook() -> bytes:
    """trivial.ipynb with both stream parameters declared, with development defaults."""
    nb = json.loads(notebook_bytes("trivial.ipynb"))
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = [
        *cell["source"][:-1],
        cell["source"][-1] + "\n",
        'checkpoint_dir = "/tmp/checkpoint"\n',
        'output_dir = "/tmp/output"',
    ]
    return json.dumps(nb).encode()


def stream_upload():
    return upload("stream.ipynb", stream_notebook())


@pytest.fixture
def streams_root(settings, tmp_path):
    settings.STREAMS_ROOT = tmp_path / "streams"
    return settings.STREAMS_ROOT


@pytest.fixture
def make_stream_job(alice, streams_root):
    """Factory: alice's job of the stream notebook, continuous unless told otherwise."""

    def make(continuous=True, parameters=None):
        spec = Job(
            name="stream",
            schedule_kind=Job.ScheduleKind.MANUAL,
            continuous=continuous,
            parameters=parameters or {},
        )
        return services.create_job(alice, spec, stream_notebook(), "stream.ipynb")

    return make


def input_tag(html: str, name: str) -> str:
    """The <input> tag of the parameter ``name`` in the page."""
    match = re.search(rf'<input[^>]*name="param-{name}"[^>]*>', html)
    assert match, f"no input for {name}"
    return match[0]


def test_the_names_are_the_ones_continuous_runs_receive(make_stream_job):
    job = make_stream_job()
    run = Run.build(
        job,
        trigger=Run.Trigger.CONTINUOUS,
        version_id=job.latest_version().pk,
        parameters={},
        now=timezone.now(),
    )
    run.save()
    injected = run.injected_parameters("local[1]")
    assert {name: injected[name] for name in notebooks.STREAM_PARAMETERS} == {
        "checkpoint_dir": str(job.checkpoint_dir),
        "output_dir": str(job.output_dir),
    }


# --- The job form ----------------------------------------------------------------------------


def test_a_continuous_jobs_form_shows_both_read_only_with_their_paths(
    alice_client, make_stream_job
):
    job = make_stream_job()
    response = alice_client.get(reverse("jobs-edit", args=[job.pk]))
    html = response.content.decode()
    for name, path in (("checkpoint_dir", job.checkpoint_dir), ("output_dir", job.output_dir)):
        tag = input_tag(html, name)
        assert " disabled" in tag and f'value="{path}"' in tag
        assert f"Set by the portal for a continuous job: {path}" in html
    assert ' value="/tmp/checkpoint"' not in input_tag(html, "checkpoint_dir")
    assert " disabled" not in input_tag(html, "name")  # the notebook's other parameters
    assert "jobs/stream-parameters" in html  # the script that toggles them with the box


def test_a_new_continuous_job_names_its_own_directories_in_words():
    schema = notebooks.read_notebook(stream_notebook()).parameter_schema
    form = ParametersForm(schema, continuous=True)
    assert form.fields["checkpoint_dir"].disabled and form.fields["output_dir"].disabled
    assert "the job's own checkpoint directory" in form.fields["checkpoint_dir"].help_text
    assert "the job's own output directory" in form.fields["output_dir"].help_text


def test_values_posted_for_a_continuous_job_are_not_stored(alice_client, make_stream_job):
    job = make_stream_job()
    data = form_data(
        schedule_kind="manual",
        continuous="on",
        **OTHER_PARAMS,
        **{"param-checkpoint_dir": "/elsewhere", "param-output_dir": "/elsewhere/out"},
    )
    response = alice_client.post(reverse("jobs-edit", args=[job.pk]), data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    job.refresh_from_db()
    assert job.parameters["name"] == "a"
    assert not set(notebooks.STREAM_PARAMETERS) & job.parameters.keys()


def test_a_job_created_continuous_through_the_form_stores_none(alice_client, streams_root):
    data = form_data(
        notebook=stream_upload(),
        schedule_kind="manual",
        continuous="on",
        **OTHER_PARAMS,
        **{"param-checkpoint_dir": "/elsewhere", "param-output_dir": "/elsewhere/out"},
    )
    response = alice_client.post(reverse("jobs-new"), data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = Job.objects.get()
    assert job.continuous and job.parameters["x"] == 1
    assert not set(notebooks.STREAM_PARAMETERS) & job.parameters.keys()


def test_a_batch_job_keeps_them_as_ordinary_parameters(alice_client, make_stream_job):
    job = make_stream_job(continuous=False)
    html = alice_client.get(reverse("jobs-edit", args=[job.pk])).content.decode()
    tag = input_tag(html, "checkpoint_dir")
    assert " disabled" not in tag and ' value="/tmp/checkpoint"' in tag
    data = form_data(
        schedule_kind="manual",
        **OTHER_PARAMS,
        **{"param-checkpoint_dir": "/data/cp", "param-output_dir": "/data/out"},
    )
    response = alice_client.post(reverse("jobs-edit", args=[job.pk]), data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    job.refresh_from_db()
    assert job.parameters["checkpoint_dir"] == "/data/cp"
    assert job.parameters["output_dir"] == "/data/out"


def test_making_a_job_continuous_in_the_form_drops_its_values(alice_client, make_stream_job):
    job = make_stream_job(continuous=False, parameters={"checkpoint_dir": "/data/cp"})
    assert job.parameters["checkpoint_dir"] == "/data/cp"
    data = form_data(
        schedule_kind="manual",
        continuous="on",
        **OTHER_PARAMS,
        **{"param-checkpoint_dir": "/data/cp", "param-output_dir": "/data/out"},
    )
    response = alice_client.post(reverse("jobs-edit", args=[job.pk]), data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    job.refresh_from_db()
    assert job.continuous and not set(notebooks.STREAM_PARAMETERS) & job.parameters.keys()


def test_a_free_row_naming_one_is_refused_for_a_continuous_job(alice, streams_root):
    data = form_data(
        schedule_kind="manual",
        continuous="on",
        **{
            "param-free-0-name": "checkpoint_dir",
            "param-free-0-type": "str",
            "param-free-0-value": "/elsewhere",
        },
    )
    files = {"notebook": upload("no_parameters_cell.ipynb")}
    form = JobForm(data, files, user=alice)
    assert not form.is_valid()
    assert "Parameter checkpoint_dir is set by the portal for a continuous job" in str(
        form.non_field_errors()
    )
    data.pop("continuous")
    files = {"notebook": upload("no_parameters_cell.ipynb")}
    form = JobForm(data, files, user=alice)
    assert form.is_valid(), form.errors
    assert form.save().parameters == {"checkpoint_dir": "/elsewhere"}


# --- The services, which every caller goes through ------------------------------------------


def test_the_services_store_none_for_a_continuous_job(make_stream_job):
    job = make_stream_job(parameters={"checkpoint_dir": "/elsewhere", "x": 5})
    assert job.parameters == {"x": 5}
    job.parameters = {"output_dir": "/elsewhere", "x": 6}
    job = services.update_job(job)
    job.refresh_from_db()
    assert job.parameters == {"x": 6}
    batch = make_stream_job(continuous=False, parameters={"output_dir": "/data/out"})
    assert batch.parameters == {"output_dir": "/data/out"}


# --- The API ---------------------------------------------------------------------------------


def api_notebook():
    return upload("stream.ipynb", stream_notebook())


def test_the_api_refuses_them_for_a_new_continuous_job(client, alice, streams_root):
    settings_ = {
        "name": "S",
        "schedule_kind": "manual",
        "continuous": True,
        "parameters": {"checkpoint_dir": "/elsewhere", "output_dir": "/x", "x": 2},
    }
    response = create(client, alice, settings_, file=api_notebook())
    assert response.status_code == 400
    message = response.json()["errors"]["parameters"][0]
    assert message.startswith("checkpoint_dir, output_dir: set by the portal for a continuous job")
    assert not Job.objects.exists()
    settings_["continuous"] = False
    response = create(client, alice, settings_, file=api_notebook())
    assert response.status_code == 201, response.json()
    assert Job.objects.get().parameters["checkpoint_dir"] == "/elsewhere"


def test_the_api_refuses_them_when_changing_a_continuous_job(client, alice, make_stream_job):
    job = make_stream_job()
    response = patch(client, alice, job, {"parameters": {"output_dir": "/x"}})
    assert response.status_code == 400
    assert "output_dir: set by the portal for a continuous job" in response.json()["detail"]
    job.refresh_from_db()
    assert "output_dir" not in job.parameters
    # Made continuous in the same request: refused too.
    batch = make_stream_job(continuous=False)
    changes = {"continuous": True, "parameters": {"checkpoint_dir": "/x"}}
    assert patch(client, alice, batch, changes).status_code == 400


def test_values_kept_from_before_are_dropped_when_the_api_makes_a_job_continuous(
    client, alice, make_stream_job
):
    job = make_stream_job(continuous=False, parameters={"checkpoint_dir": "/data/cp", "x": 3})
    response = patch(client, alice, job, {"continuous": True})
    assert response.status_code == 200, response.json()
    assert response.json()["parameters"] == {"x": 3}
    job.refresh_from_db()
    assert job.parameters == {"x": 3}
