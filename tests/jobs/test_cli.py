"""``manage.py runnotebook``: the real executor and kernel, in-process (--inline)."""

import json
import re
from pathlib import Path

import nbformat
import pytest
from django.core.management import CommandError, call_command

from jobs.models import Run
from tests.conftest import NOTEBOOKS

pytestmark = [pytest.mark.slow, pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]


def run_cli(capsys, *args):
    call_command("runnotebook", *args)
    return capsys.readouterr().out


def test_inline_run_prints_the_outcome_as_json(capsys):
    out = run_cli(
        capsys,
        str(NOTEBOOKS / "trivial.ipynb"),
        "-p",
        "x",
        "21",
        "-p",
        "name",
        "5",
        "-p",
        "flag",
        "False",
        "--json",
    )
    outcome = json.loads(out)
    assert outcome["status"] == "SUCCEEDED"
    # papermill's CLI typing: numbers and booleans; a text parameter keeps the text typed.
    assert outcome["parameters"] == {"x": 21, "name": "5", "flag": False}
    nb = nbformat.read(outcome["output_ipynb"], as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "x = 21" in injected.source and 'name = "5"' in injected.source
    texts = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "total 42" in texts
    assert outcome["output_html"].endswith("output.html")
    run = Run.objects.get(pk=outcome["run_id"])
    assert run.trigger == "cli" and run.job.owner.username == "portal-cli"


def test_a_failing_notebook_exits_non_zero_with_the_failing_cell(capsys):
    with pytest.raises(SystemExit) as exc:
        call_command("runnotebook", str(NOTEBOOKS / "failing.ipynb"))
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "failing cell 3: ZeroDivisionError" in out
    # The run page and the e-mail name the cell as the traceback and the progress do:
    # code cell 4 of 5 (parameters, injected parameters, a = 1, the division, never run).
    from django.template.loader import render_to_string

    run = Run.objects.latest("pk")
    assert (run.cells_done, run.cells_total) == (4, 5)
    assert "In[4]" in re.sub(r"\x1b\[[0-9;]*m", "", run.error_traceback)
    assert (
        render_to_string("jobs/_failing_cell.txt", {"run": run})
        == "In code cell 4 of 5 (In [4] in the traceback)"
    )


def test_wrong_parameters_are_refused_before_running():
    with pytest.raises(CommandError, match="no parameter 'nope'"):
        call_command("runnotebook", str(NOTEBOOKS / "trivial.ipynb"), "-p", "nope", "1")
    with pytest.raises(CommandError, match="x: expected a whole number"):
        call_command("runnotebook", str(NOTEBOOKS / "trivial.ipynb"), "-p", "x", "1.5")
    assert not Run.objects.exists()


def test_kernels_never_see_the_portals_secrets(capsys, monkeypatch):
    for name in (
        "SECRET_KEY",
        "DATABASE_URL",
        "AWS_SECRET_ACCESS_KEY",
        "REDIS_URL",
        "PORTAL_PROBE_SECRET",
    ):
        monkeypatch.setenv(name, "do-not-leak")
    out = run_cli(capsys, str(NOTEBOOKS / "env_probe.ipynb"), "--json")
    assert json.loads(out)["status"] == "SUCCEEDED", out


def test_the_notebooks_own_kernel_name_is_ignored(capsys, tmp_path):
    nb = nbformat.read(str(NOTEBOOKS / "trivial.ipynb"), as_version=4)
    nb.metadata["kernelspec"] = {
        "name": "some-kernel-we-do-not-have",
        "display_name": "?",
        "language": "python",
    }
    path = tmp_path / "other-kernel.ipynb"
    nbformat.write(nb, str(path))
    assert json.loads(run_cli(capsys, str(path), "--json"))["status"] == "SUCCEEDED"


def test_a_run_reads_the_data_root_and_writes_its_owners_views(capsys, tmp_path, settings):
    """The kernel's telemetry roots are the data root and the streaming pings' landing
    directory (read-only) and the owner's own views root (writable), as the quick start's
    examples need."""
    from jobs.kernel import views_root
    from jobs.management.commands.runnotebook import system_user

    code = (
        "import os, telemetry\n"
        "views = str(telemetry.views_root())\n"
        "open(os.path.join(views, 'probe.txt'), 'w').write('ok')\n"
        "print(views, str(telemetry.data_root()), os.access(str(telemetry.data_root()), os.W_OK))\n"
        "stream = os.environ['TELEMETRY_STREAM_ROOT']\n"
        "print(stream, os.listdir(stream), os.access(stream, os.W_OK))"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    path = tmp_path / "roots.ipynb"
    nbformat.write(nb, str(path))
    Path(settings.TELEMETRY_DATA_ROOT).mkdir(parents=True, exist_ok=True)
    landing = Path(settings.TELEMETRY_STREAM_ROOT)
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "probe.txt").write_text("")
    outcome = json.loads(run_cli(capsys, str(path), "--json"))
    assert outcome["status"] == "SUCCEEDED", outcome
    printed = (
        nbformat.read(outcome["output_ipynb"], as_version=4).cells[-1].outputs[0]["text"].split()
    )
    owner_views = views_root(system_user().pk)
    assert printed[:3] == [owner_views, settings.TELEMETRY_DATA_ROOT, "False"]
    # The streaming pings' landing directory: readable, not writable.
    assert printed[3:] == [settings.TELEMETRY_STREAM_ROOT, "['probe.txt']", "False"]
    assert (Path(owner_views) / "probe.txt").read_text() == "ok"
