"""papermill's rule for notebooks without a parameters cell: any parameters are taken and
injected at the top. A notebook with the cell still takes only its own parameters."""

import json
import math

import nbformat
import pytest
from django.urls import reverse

from api.models import ApiToken
from jobs import notebooks, services
from jobs.models import Job, Run
from tests.conftest import notebook_bytes
from tests.jobs.test_views import form_data, upload

pytestmark = pytest.mark.django_db

FREE = "no_parameters_cell.ipynb"


def rows(*rows: tuple[str, str, str]) -> dict:
    """Form data of free-parameter rows (name, type, value)."""
    data = {}
    for i, (name, kind, value) in enumerate(rows):
        data.update(
            {
                f"param-free-{i}-name": name,
                f"param-free-{i}-type": kind,
                f"param-free-{i}-value": value,
            }
        )
    return data


def test_reading_a_notebook_tells_whether_it_has_a_parameters_cell():
    assert notebooks.read_notebook(notebook_bytes(FREE)).has_parameters_cell is False
    assert notebooks.read_notebook(notebook_bytes("trivial.ipynb")).has_parameters_cell is True
    # An empty parameters cell is still a parameters cell: nothing free about it.
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("", metadata={"tags": ["parameters"]})]
    parsed = notebooks.read_notebook(nbformat.writes(nb).encode())
    assert (parsed.parameter_schema, parsed.has_parameters_cell) == ({}, True)


def test_free_parameters_take_any_name_with_a_json_value():
    values = {"n": 3, "ratio": 0.5, "on": True, "who": "Ada", "items": (1, "a"), "none": None}
    clean = notebooks.coerce_parameters({}, values, free=True)
    assert clean == {**values, "items": [1, "a"]}


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"run_id": 1}, "'run_id' is reserved"),
        ({"not a name": 1}, "'not a name' is not a valid parameter name"),
        ({"class": 1}, "'class' is not a valid parameter name"),
        ({"d": {"a": 1}}, "d: expected a number, text, true or false, a list or null"),
        ({"x": math.inf}, "x: expected a finite number"),
        ({"x": [math.nan]}, "x: expected a list"),
    ],
)
def test_free_parameters_still_refuse_what_cannot_be_injected(values, problem):
    with pytest.raises(notebooks.ParameterError, match=problem):
        notebooks.coerce_parameters({}, values, free=True)


def test_a_notebook_with_a_parameters_cell_refuses_unknown_names():
    schema = notebooks.read_notebook(notebook_bytes("trivial.ipynb")).parameter_schema
    with pytest.raises(notebooks.ParameterError, match="no parameter 'greeting'"):
        notebooks.coerce_parameters(schema, {"greeting": "hi"})
    with pytest.raises(notebooks.ParameterError, match="no parameter 'greeting' .*none"):
        notebooks.coerce_parameters({}, {"greeting": "hi"})  # an empty parameters cell


def test_the_job_form_takes_typed_free_parameters(alice_client):
    data = form_data(
        notebook=upload(FREE),
        **rows(
            ("greeting", "str", " hi "),
            ("times", "int", "3"),
            ("ratio", "float", "0.25"),
            ("loud", "bool", "true"),
            ("items", "list", '[1, "a"]'),
            ("day", "date", "2026-05-01"),
            ("", "str", ""),  # a blank row is ignored
        ),
    )
    response = alice_client.post(reverse("jobs-new"), data)
    assert response.status_code == 302, response.content.decode()
    job = Job.objects.get()
    assert job.parameters == {
        "greeting": " hi ",
        "times": 3,
        "ratio": 0.25,
        "loud": True,
        "items": [1, "a"],
        "day": "2026-05-01",
    }
    assert job.latest_version().has_parameters_cell is False
    # The edit form shows them again, typed, with blank rows to add more.
    page = alice_client.get(reverse("jobs-edit", args=[job.pk])).content.decode()
    assert 'name="param-free-1-name"' in page and 'value="times"' in page
    assert '<option value="int" selected>' in page and 'value="[1, &quot;a&quot;]"' in page
    assert 'name="param-free-8-name"' in page and 'id="add-free-parameter"' in page
    detail = alice_client.get(job.get_absolute_url()).content.decode()
    assert 'id="free-parameters-note"' in detail and "<code>times</code>" in detail


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("times", "int", "three"), "times: expected a whole number"),
        (("items", "list", "1, 2"), "items: expected a list"),
        (("run_id", "str", "mine"), "&#x27;run_id&#x27; is reserved"),
        (("2x", "str", "a"), "&#x27;2x&#x27; is not a valid parameter name"),
        (("", "str", "orphan"), "Parameter row 1: enter a name"),
    ],
)
def test_the_job_form_refuses_free_parameters_that_do_not_fit(alice_client, row, message):
    response = alice_client.post(reverse("jobs-new"), form_data(notebook=upload(FREE), **rows(row)))
    assert response.status_code == 200 and message in response.content.decode()
    assert not Job.objects.exists()


def test_the_job_form_refuses_a_name_given_twice(alice_client):
    data = form_data(notebook=upload(FREE), **rows(("a", "int", "1"), ("a", "int", "2")))
    response = alice_client.post(reverse("jobs-new"), data)
    assert "Parameter a is given twice." in response.content.decode()


def test_free_rows_for_a_notebook_with_a_parameters_cell_are_refused(alice_client):
    data = form_data(notebook=upload("trivial.ipynb"), **rows(("greeting", "str", "hi")))
    response = alice_client.post(reverse("jobs-new"), data)
    assert "The notebook has no parameter named greeting." in response.content.decode()
    assert not Job.objects.exists()


def test_inspecting_a_notebook_without_the_cell_offers_free_rows(alice_client):
    html = alice_client.post(reverse("jobs-inspect"), {"notebook": upload(FREE)}).content.decode()
    assert 'id="free-parameters-note"' in html and html.count('class="free-parameter"') == 3
    assert 'name="param-free-0-type"' in html and 'id="add-free-parameter"' in html
    html = alice_client.post(
        reverse("jobs-inspect"), {"notebook": upload("trivial.ipynb")}
    ).content.decode()
    assert "free-parameter" not in html


def test_the_run_page_says_the_values_were_injected_at_the_top(alice_client, make_job, alice):
    free = services.run_now(make_job(FREE, parameters={"times": 3}), alice, {"greeting": "hi"})
    page = alice_client.get(free.get_absolute_url()).content.decode()
    note = "This notebook has no parameters cell; values were injected at the top."
    assert note in page and "&quot;greeting&quot;: &quot;hi&quot;" in page
    declared = services.run_now(make_job(), alice)
    assert note not in alice_client.get(declared.get_absolute_url()).content.decode()


def test_the_api_runs_a_notebook_without_the_cell_with_any_parameters(client, alice, make_job):
    token = ApiToken.issue(alice, "t", ["read", "run"])[1]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def run(job, parameters):
        body = json.dumps({"parameters": parameters})
        return client.post(
            f"/api/jobs/{job.pk}/run/", body, content_type="application/json", **headers
        )

    free = make_job(FREE)
    response = run(free, {"greeting": "hi", "times": 3, "items": [1]})
    assert response.status_code == 201, response.json()
    assert Run.objects.get().parameters == {"greeting": "hi", "times": 3, "items": [1]}
    version = client.get(f"/api/jobs/{free.pk}/versions/", **headers).json()[0]
    assert version["has_parameters_cell"] is False
    refused = run(make_job(), {"greeting": "hi"})
    assert refused.status_code == 400
    assert "no parameter 'greeting'" in refused.json()["errors"]["parameters"][0]


def test_a_new_version_with_a_parameters_cell_drops_the_free_values(make_job, alice):
    job = make_job(FREE, parameters={"greeting": "hi", "x": 5})
    _, dropped = services.upload_version(job, alice, notebook_bytes("trivial.ipynb"))
    job.refresh_from_db()
    assert dropped == ["greeting"] and job.parameters == {"x": 5}


def test_the_migration_reads_stored_notebooks_for_the_flag(make_job):
    from importlib import import_module

    from django.apps import apps

    from jobs.models import NotebookVersion

    migration = import_module("jobs.migrations.0010_notebookversion_has_parameters_cell")
    free, declared, lost = make_job(FREE), make_job(), make_job(FREE, name="lost")
    NotebookVersion.objects.update(has_parameters_cell=True)  # as before the migration
    NotebookVersion.objects.filter(job=lost).update(storage_key="gone.ipynb")
    migration.fill(apps, None)
    flags = dict(NotebookVersion.objects.values_list("job_id", "has_parameters_cell"))
    # A notebook that cannot be read keeps the old rule: only declared parameters.
    assert flags == {free.pk: False, declared.pk: True, lost.pk: True}
