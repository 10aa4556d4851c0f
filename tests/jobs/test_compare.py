"""Comparing two runs (jobs.compare): the model, the page and its frame, the picker."""

import re

import nbformat
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from jobs import compare, render, services
from jobs.models import Run
from portal.usercontent import serve

pytestmark = pytest.mark.django_db


def stdout(text):
    return new_output("stream", name="stdout", text=text)


def notebook(x=1, total="2\n", extra=None):
    cells = [
        new_code_cell(f"x = {x}", metadata={"tags": ["injected-parameters"]}),
        new_code_cell("print(x * 2)", outputs=[stdout(total)], execution_count=2),
        new_markdown_cell("# Notes"),
    ]
    if extra is not None:
        cells.append(extra)
    return new_notebook(cells=cells)


def finished(job, user, nb, state=Run.State.SUCCEEDED, parameters=None):
    """A run of ``job`` that ended in ``state`` with ``nb`` as its stored output."""
    run = services.claim_run(services.run_now(job, user, parameters or {}).pk, "w")
    key = default_storage.save(
        f"runs/{run.uuid}/output.ipynb", ContentFile(nbformat.writes(nb).encode())
    )
    Run.objects.filter(pk=run.pk).update(state=state, finished_at=timezone.now(), output_key=key)
    return Run.objects.select_related("job", "version").get(pk=run.pk)


@pytest.fixture
def job(make_job):
    return make_job("trivial.ipynb", name="cmp")


def test_a_changed_parameter_and_output_are_found(job, alice):
    a = finished(job, alice, notebook(1, "2\n"), parameters={"x": 1})
    b = finished(job, alice, notebook(2, "4\n"), state=Run.State.FAILED, parameters={"x": 2})
    c = compare.compare_runs(a, b)
    assert c.changed_parameters == ["x"]
    row = next(r for r in c.parameters if r.name == "x")
    assert (row.a, row.b, row.changed) == (1, 2, True)
    assert not next(r for r in c.parameters if r.name == "name").changed  # defaults
    assert not c.version_changed
    assert [r.status for r in c.cells] == ["changed", "changed", "unchanged"]
    injected, printed, _ = c.cells
    assert injected.source_changed and not injected.outputs_changed
    assert ("del", "-x = 1") in injected.source_diff and ("add", "+x = 2") in injected.source_diff
    assert printed.outputs_changed and not printed.source_changed


def test_execution_counts_and_metadata_alone_are_no_change(job, alice):
    nb_a, nb_b = notebook(), notebook()
    nb_b.cells[1].execution_count = 7
    nb_b.cells[1].metadata["papermill"] = {"duration": 1.5}
    c = compare.compare_runs(finished(job, alice, nb_a), finished(job, alice, nb_b))
    assert {r.status for r in c.cells} == {"unchanged"}


def test_added_and_removed_cells_are_aligned(job, alice):
    extra = new_code_cell("print('only in B')", outputs=[stdout("only in B\n")])
    nb_a = notebook()
    nb_a.cells.insert(1, new_code_cell("import this_is_gone_for_good_and_long"))
    c = compare.compare_runs(
        finished(job, alice, nb_a), finished(job, alice, notebook(extra=extra))
    )
    statuses = [(r.status, r.a_index, r.b_index) for r in c.cells]
    assert ("removed", 1, None) in statuses
    assert ("added", None, 3) in statuses
    assert [s for s, _, _ in statuses].count("unchanged") == 3


def test_different_versions_diff_the_source(job, alice):
    a = finished(job, alice, notebook())
    upload = nbformat.read("tests/notebooks/trivial.ipynb", as_version=4)
    upload.cells.append(new_code_cell("print('v2')"))
    services.upload_version(job, alice, nbformat.writes(upload).encode(), "v2.ipynb")
    nb_b = notebook()
    nb_b.cells[1].source = "print(x * 3)"
    b = finished(job, alice, nb_b)
    c = compare.compare_runs(a, b)
    assert c.version_changed and (a.version.number, b.version.number) == (1, 2)
    row = c.cells[1]
    assert row.status == "changed" and row.source_changed
    assert ("add", "+print(x * 3)") in row.source_diff


def test_an_expired_output_is_said_and_parameters_still_compare(job, alice):
    a = finished(job, alice, notebook())
    b = finished(job, alice, notebook(2))
    Run.objects.filter(pk=b.pk).update(output_key="", output_expired_at=timezone.now())
    b.refresh_from_db()
    c = compare.compare_runs(a, b)
    assert c.cells is None
    assert f"Run #{b.pk}'s output expired on" in c.unavailable
    assert [r.name for r in c.parameters][:1] == ["x"]
    with pytest.raises(compare.OutputUnavailable):
        compare.comparison_page_key(c)


def test_a_too_large_output_is_said(job, alice, monkeypatch):
    monkeypatch.setattr(compare, "COMPARE_MAX_BYTES", 10)
    c = compare.compare_runs(finished(job, alice, notebook()), finished(job, alice, notebook()))
    assert c.cells is None and "too large to compare" in c.unavailable


def test_last_success_before(job, alice):
    ok = finished(job, alice, notebook())
    finished(job, alice, notebook(), state=Run.State.FAILED)
    failed = finished(job, alice, notebook(), state=Run.State.FAILED)
    later = finished(job, alice, notebook())
    assert compare.last_success_before(failed) == ok
    assert compare.last_success_before(ok) is None
    assert compare.last_success_before(later) == ok


# --- The rendered page ---------------------------------------------------------------------

HOSTILE = (
    "<div>evil</div><script>parent.__pwned = 1</script>"
    '<img src=x onerror="parent.__pwned = 1"><a href="javascript:alert(1)">x</a>'
)


def hostile_cell():
    out = new_output("display_data", data={"text/html": HOSTILE, "text/plain": "evil"})
    js = new_output("display_data", data={"application/javascript": "parent.__pwned = 1"})
    cell = new_code_cell("display(evil)", outputs=[out, js])
    # A notebook cannot dress its cell as one of the page's own heads.
    cell.metadata["portal_compare"] = {"role": "head", "title": "<b>x</b>", "diff": [["x", "<i>"]]}
    return cell


def test_the_page_is_sanitised_and_side_by_side(job, alice):
    a = finished(job, alice, notebook(1, "2\n"))
    b = finished(job, alice, notebook(2, "4\n", extra=hostile_cell()))
    c = compare.compare_runs(a, b)
    key = compare.comparison_page_key(c)
    assert key.startswith(f"runs/{a.uuid}/compare/{b.uuid}-")
    html = default_storage.open(key).read().decode()
    assert "<script>parent" not in html and "onerror" not in html
    assert "javascript:" not in html and "application/javascript" not in html
    assert "<b>x</b>" not in html and "<i>" not in html
    assert html.count('class="cmp-side cmp-a"') == 3 and html.count('class="cmp-side cmp-b"') == 4
    assert "(no such cell in run #" in html
    assert '<span class="cmp-add">+x = 2</span>' in html
    assert render.PLOTLY_BASIC_JS_URL in html  # its figures are scatter plots
    # Rendered once: the second request reuses the stored page.
    assert compare.comparison_page_key(compare.compare_runs(a, b)) == key


# --- Pages ---------------------------------------------------------------------------------


def test_the_compare_page_shows_parameters_and_a_sandboxed_frame(job, alice, settings):
    a = finished(job, alice, notebook(1, "2\n"), parameters={"x": 1})
    b = finished(job, alice, notebook(2, "4\n"), parameters={"x": 2})
    client = Client()
    client.force_login(alice)
    response = client.get(f"/runs/{a.pk}/compare/{b.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert re.search(r'<tr class="changed" data-name="x">', page)
    assert '<tr data-name="name">' in page
    [frame] = re.findall(r"<iframe[^>]*>", page)
    assert 'id="compare-frame"' in frame and 'sandbox="allow-scripts"' in frame
    assert "allow-same-origin" not in frame
    src = re.search(r'src="([^"]+)"', frame).group(1)
    assert src.startswith(settings.USERCONTENT_ORIGIN + "/content/")
    # The frame's URL serves the page from the user-content origin, with the sandbox CSP.
    host = settings.USERCONTENT_HOST
    served = Client(HTTP_HOST=host).get(src.removeprefix(settings.USERCONTENT_ORIGIN))
    assert served.status_code == 200, served.content
    assert "sandbox allow-scripts" in served["Content-Security-Policy"]
    assert b"cmp-head" in b"".join(served.streaming_content)
    # No untrusted notebook text on the portal's own page.
    assert "print(x * 2)" not in page


def test_a_stale_comparison_url_is_not_served(job, alice, settings, rf):
    from portal.usercontent import comparison_url

    a = finished(job, alice, notebook())
    b = finished(job, alice, notebook(2))
    key = compare.comparison_page_key(compare.compare_runs(a, b))
    url = comparison_url(key, a.pk, a.attempt, b.pk, b.attempt)
    path = url.removeprefix(settings.USERCONTENT_ORIGIN)
    assert serve(rf.get(path)).status_code == 200
    for forged in (
        comparison_url(f"runs/{a.uuid}/output.ipynb", a.pk, a.attempt, b.pk, b.attempt),
        comparison_url(key, a.pk, a.attempt + 1, b.pk, b.attempt),
        comparison_url(key, b.pk, b.attempt, a.pk, a.attempt),
    ):
        assert serve(rf.get(forged.removeprefix(settings.USERCONTENT_ORIGIN))).status_code == 404
    Run.objects.filter(pk=b.pk).update(output_key="", output_expired_at=timezone.now())
    assert serve(rf.get(path)).status_code == 404


def test_another_users_run_is_404(job, alice, bob, make_job):
    a = finished(job, alice, notebook())
    theirs = make_job("trivial.ipynb", name="bob's", owner=bob)
    b = finished(theirs, bob, notebook())
    client = Client()
    client.force_login(alice)
    assert client.get(f"/runs/{a.pk}/compare/{b.pk}/").status_code == 404
    assert client.get(f"/runs/{b.pk}/compare/{a.pk}/").status_code == 404
    assert client.get(f"/runs/{a.pk}/compare/999999/").status_code == 404


def test_an_expired_run_says_so_on_the_page(job, alice):
    a = finished(job, alice, notebook())
    b = finished(job, alice, notebook(2))
    Run.objects.filter(pk=a.pk).update(output_key="", output_expired_at=timezone.now())
    client = Client()
    client.force_login(alice)
    page = client.get(f"/runs/{a.pk}/compare/{b.pk}/").content.decode()
    assert 'id="compare-unavailable"' in page and "output expired on" in page
    assert "<iframe" not in page


def test_a_failed_run_links_to_the_last_success(job, alice):
    ok = finished(job, alice, notebook())
    failed = finished(job, alice, notebook(), state=Run.State.FAILED)
    client = Client()
    client.force_login(alice)
    page = client.get(f"/runs/{failed.pk}/").content.decode()
    assert f'href="/runs/{ok.pk}/compare/{failed.pk}/"' in page
    assert "Compare with the last success" in page
    assert "compare-last-success" not in client.get(f"/runs/{ok.pk}/").content.decode()


def test_the_job_page_picker_redirects(job, alice, bob, make_job):
    a = finished(job, alice, notebook())
    b = finished(job, alice, notebook(2))
    client = Client()
    client.force_login(alice)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="compare-picker"' in page and f'<option value="{a.pk}"' in page
    response = client.get(f"/jobs/{job.pk}/compare/", {"a": a.pk, "b": b.pk})
    assert response.status_code == 302 and response.url == f"/runs/{a.pk}/compare/{b.pk}/"
    # A run of another job, the same run twice or garbage: back to the job.
    other = finished(make_job("trivial.ipynb", name="other"), alice, notebook())
    for query in ({"a": a.pk, "b": other.pk}, {"a": a.pk, "b": a.pk}, {"a": "x"}):
        response = client.get(f"/jobs/{job.pk}/compare/", query)
        assert response.status_code == 302 and response.url == f"/jobs/{job.pk}/"
    bob_client = Client()
    bob_client.force_login(bob)
    assert bob_client.get(f"/jobs/{job.pk}/compare/", {"a": a.pk, "b": b.pk}).status_code == 404


def test_the_management_command_prints_a_summary(job, alice, capsys):
    a = finished(job, alice, notebook(1, "2\n"), parameters={"x": 1})
    b = finished(job, alice, notebook(2, "4\n"), parameters={"x": 2})
    call_command("compareruns", str(a.pk), str(b.pk))
    out = capsys.readouterr().out
    assert f"A: run #{a.pk}" in out and "x: 1 → 2" in out
    assert "2 changed" in out
    call_command("compareruns", str(a.pk), str(b.pk), "--json")
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["parameters"][0] == {
        "name": "x",
        "a": 1,
        "b": 2,
        "in_a": True,
        "in_b": True,
        "changed": True,
    }


# --- Recorded values -------------------------------------------------------------------------


def test_recorded_values_are_compared_and_shown_escaped(job, alice):
    from recorded.models import RecordedValue

    a = finished(job, alice, notebook())
    b = finished(job, alice, notebook())
    for run, rmse, label in ((a, 0.5, "ok"), (b, 0.75, "<b>bad</b>")):
        RecordedValue.objects.create(run=run, name="rmse", kind="number", number=rmse)
        RecordedValue.objects.create(run=run, name="label", kind="text", text=label)
        RecordedValue.objects.create(run=run, name="same", kind="number", number=1)
    RecordedValue.objects.create(
        run=b, name="table", kind="table", data={"columns": ["x"], "rows": [[1], [2]]}
    )
    rows = {r.name: r for r in compare.compare_runs(a, b).values}
    assert (rows["rmse"].a, rows["rmse"].b, rows["rmse"].changed) == ("0.5", "0.75", True)
    assert not rows["same"].changed
    assert (rows["table"].a, rows["table"].b) == (None, "table, 2 rows × 1 columns")
    client = Client()
    client.force_login(alice)
    page = client.get(f"/runs/{a.pk}/compare/{b.pk}/").content.decode()
    assert 'id="compare-values"' in page and "3 changed" in page
    assert '<tr class="changed" data-name="rmse">' in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page


def test_the_summary_lists_changed_values(job, alice, capsys):
    from recorded.models import RecordedValue

    a = finished(job, alice, notebook())
    b = finished(job, alice, notebook())
    RecordedValue.objects.create(run=a, name="rmse", kind="number", number=0.5)
    RecordedValue.objects.create(run=b, name="rmse", kind="number", number=0.75)
    call_command("compareruns", str(a.pk), str(b.pk))
    out = capsys.readouterr().out
    assert "recorded values: 1 changed\n  rmse: 0.5 → 0.75\n" in out


def test_stored_pages_go_with_run_a_and_with_the_job(
    job, alice, django_capture_on_commit_callbacks
):
    a = finished(job, alice, notebook())
    b = finished(job, alice, notebook(2))
    key = compare.comparison_page_key(compare.compare_runs(a, b))
    assert compare.stored_pages(a.uuid) == [key] and compare.stored_pages(b.uuid) == []
    compare.delete_stored(a)
    assert not default_storage.exists(key) and compare.stored_pages(a.uuid) == []
    key = compare.comparison_page_key(compare.compare_runs(a, b))
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_job(job)
    assert not default_storage.exists(key)


def test_retention_deletes_the_pages_of_an_expired_run(job, alice):
    import datetime as dt

    from jobs.services import retention

    a = finished(job, alice, notebook())
    b = finished(job, alice, notebook(2))
    key = compare.comparison_page_key(compare.compare_runs(a, b))
    later = timezone.now() + dt.timedelta(days=10_000)
    retention.expire_run_outputs(later)
    assert not default_storage.exists(key)


def test_nbdime_brings_no_server_at_import():
    """Only nbdime's Python diff is used: importing it must not load its web app's server
    (jupyter_server, tornado) into the portal's processes."""
    import subprocess
    import sys

    code = (
        "import sys, nbdime; nbdime.diff_notebooks; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'jupyter_server', 'tornado', 'git', 'requests'} or m.startswith('nbdime.webapp')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
