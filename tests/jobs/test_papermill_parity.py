"""Notebooks from the wild end as papermill ends them, with a message that is never empty.

Each notebook runs twice on real kernels: through ``manage.py runnotebook --json`` (the
portal's executor, in a sandbox) and through papermill itself, so the tests compare the
portal's outcome with papermill's rather than with a hard-coded expectation.
"""

import json
from pathlib import Path

import nbformat
import papermill
import pytest
from django.core import mail
from django.core.management import call_command

from jobs import services
from jobs.models import Run
from tests.conftest import NOTEBOOKS

pytestmark = [pytest.mark.slow, pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]

USAGE_ERROR = "Line magic function `%undefined-line-magic` not found."


def portal_run(capsys, name: str, *args: str) -> dict:
    """The JSON outcome of ``runnotebook NAME ARGS... --json`` (owned by alice)."""
    try:
        call_command("runnotebook", str(NOTEBOOKS / name), "--owner", "alice", "--json", *args)
    except SystemExit as exc:  # a run that did not succeed
        assert exc.code == 1
    return json.loads(capsys.readouterr().out)


def papermill_run(tmp_path: Path, name: str, parameters: dict | None = None):
    """``(error, notebook)`` papermill itself gives: error is None on success, else
    ``(ename, evalue)``; notebook is its output notebook."""
    output = tmp_path / f"papermill-{name}"
    error = None
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / name),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as exc:
        error = (exc.ename, exc.evalue)
    return error, nbformat.read(str(output), as_version=4)


def texts(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_an_unknown_line_magic_fails_as_in_papermill_and_says_why(capsys, tmp_path, alice, client):
    outcome = portal_run(capsys, "line_magic.ipynb")
    papermill_error, _ = papermill_run(tmp_path, "line_magic.ipynb")
    # papermill fails too, but says nothing: the cell had no error output.
    assert papermill_error == ("CellExecutionError", "")
    assert outcome["status"] == "FAILED"
    assert (outcome["exception"], outcome["message"]) == ("UsageError", USAGE_ERROR)
    run = Run.objects.get(pk=outcome["run_id"])
    assert run.error_cell_index == 2  # after the injected parameters (run_id...) at the top
    assert "UsageError: " + USAGE_ERROR in run.error_traceback
    client.force_login(alice)
    page = client.get(run.get_absolute_url()).content.decode()
    assert f"<strong>UsageError</strong>: {USAGE_ERROR}" in page
    job = run.job
    job.notify_on_failure = alice.email
    job.save(update_fields=["notify_on_failure"])
    mail.outbox.clear()
    assert services.send_run_alert(run.pk)
    assert f"Exception:  UsageError: {USAGE_ERROR}" in mail.outbox[0].body


@pytest.mark.parametrize(
    ("code", "papermill_says"),
    [("none", None), ("0", None), ("1", ("SystemExit", "1")), ("bye", ("SystemExit", "bye"))],
)
def test_system_exit_stops_or_fails_as_in_papermill(capsys, tmp_path, alice, code, papermill_says):
    papermill_error, papermill_nb = papermill_run(tmp_path, "system_exit.ipynb", {"code": code})
    assert papermill_error == papermill_says  # what papermill does, checked, not assumed
    assert "after the exit" not in texts(papermill_nb)  # either way it stops there
    outcome = portal_run(capsys, "system_exit.ipynb", "-p", "code", code)
    nb = nbformat.read(outcome["output_ipynb"], as_version=4)
    assert "before the exit" in texts(nb) and "after the exit" not in texts(nb)
    if papermill_error is None:
        assert outcome["status"] == "SUCCEEDED"
    else:
        assert outcome["status"] == "FAILED"
        assert (outcome["exception"], outcome["message"]) == papermill_error


def test_a_syntax_error_in_the_parameters_cell_fails_as_in_papermill(capsys, tmp_path, alice):
    papermill_error, _ = papermill_run(tmp_path, "parameters_syntax_error.ipynb", {"alpha": 1.0})
    outcome = portal_run(capsys, "parameters_syntax_error.ipynb", "-p", "alpha", "1.0")
    assert outcome["status"] == "FAILED"
    assert papermill_error is not None and papermill_error[0] == "SyntaxError"
    assert outcome["exception"] == "SyntaxError" and outcome["message"]
    assert outcome["failing_cell"] == 0  # the parameters cell, before anything injected


def test_a_notebook_without_a_parameters_cell_takes_them_at_the_top_as_papermill(
    capsys, tmp_path, alice, client
):
    papermill_error, papermill_nb = papermill_run(
        tmp_path, "no_parameters_cell.ipynb", {"greeting": "hi", "times": 3}
    )
    outcome = portal_run(
        capsys, "no_parameters_cell.ipynb", "-p", "greeting", "hi", "-p", "times", "3"
    )
    assert papermill_error is None and outcome["status"] == "SUCCEEDED"
    assert outcome["parameters"] == {"greeting": "hi", "times": 3}
    nb = nbformat.read(outcome["output_ipynb"], as_version=4)
    for executed in (papermill_nb, nb):
        assert executed.cells[0].metadata["tags"] == ["injected-parameters"]
        assert "greeting=hi times=3" in texts(executed)
    assert 'greeting = "hi"' in nb.cells[0].source and "times = 3" in nb.cells[0].source
    client.force_login(alice)
    page = client.get(Run.objects.get(pk=outcome["run_id"]).get_absolute_url())
    assert "values were injected at the top" in page.content.decode()
    # Without the values the notebook fails as papermill's does, saying why.
    papermill_error, _ = papermill_run(tmp_path, "no_parameters_cell.ipynb")
    outcome = portal_run(capsys, "no_parameters_cell.ipynb")
    assert papermill_error == ("NameError", "name 'greeting' is not defined")
    assert (outcome["exception"], outcome["message"]) == papermill_error
