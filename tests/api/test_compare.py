"""GET /api/runs/{a}/compare/{b}/: the comparison as JSON, for visible runs only."""

import pytest

from api.models import ApiToken
from jobs.models import Run
from tests.jobs.test_compare import finished, notebook

pytestmark = pytest.mark.django_db


def get(client, user, path, scopes=("read",)):
    _, token = ApiToken.issue(user, "t", list(scopes))
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_the_comparison_as_json(client, make_job, alice):
    job = make_job("trivial.ipynb", name="cmp")
    a = finished(job, alice, notebook(1, "2\n"), parameters={"x": 1})
    b = finished(job, alice, notebook(2, "4\n"), state=Run.State.FAILED, parameters={"x": 2})
    response = get(client, alice, f"/api/runs/{a.pk}/compare/{b.pk}/")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["a"]["id"] == a.pk and data["b"]["state"] == "FAILED"
    assert data["job"] == {"id": job.pk, "name": "cmp"}
    assert data["version_changed"] is False
    assert [p["name"] for p in data["parameters"] if p["changed"]] == ["x"]
    assert [c["status"] for c in data["cells"]] == ["changed", "changed", "unchanged"]
    assert data["cells"][1] == {
        "index": 1,
        "status": "changed",
        "a_index": 1,
        "b_index": 1,
        "cell_type": "code",
        "source_changed": False,
        "outputs_changed": True,
    }
    assert data["cells_unavailable"] == ""
    assert data["values"] == []
    assert data["web_path"] == f"/runs/{a.pk}/compare/{b.pk}/"


def test_a_run_without_output_still_compares_parameters(client, make_job, alice):
    from jobs import services

    job = make_job("trivial.ipynb")
    a = finished(job, alice, notebook())
    queued = services.run_now(job, alice)
    data = get(client, alice, f"/api/runs/{a.pk}/compare/{queued.pk}/").json()
    assert data["cells"] is None
    assert data["cells_unavailable"] == f"Run #{queued.pk} has not finished: it has no output yet."


def test_others_runs_are_404(client, make_job, alice, bob):
    a = finished(make_job("trivial.ipynb"), alice, notebook())
    theirs = finished(make_job("trivial.ipynb", owner=bob), bob, notebook())
    for path in (
        f"/api/runs/{a.pk}/compare/{theirs.pk}/",
        f"/api/runs/{theirs.pk}/compare/{a.pk}/",
    ):
        response = get(client, alice, path)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
