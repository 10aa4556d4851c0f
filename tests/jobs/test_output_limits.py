"""Output limits: per-cell stream cap, whole-notebook cap, huge messages, render threshold,
error fields, streamed downloads and the storage chores at a run's end (issue 10 §4, §8).

The kernel tests run real notebooks in a sandbox with small limits (settings), so that a
few megabytes stand for the production gigabyte; ``bench/output_flood.py`` runs the 1 GB.
"""

import io
from pathlib import Path

import nbformat
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from jobs import executor, render, services
from jobs.executor import Outcome, OutcomeStatus
from jobs.models import Run
from tests.sandboxes import execute

KB = 2**10
MB = 2**20


@pytest.fixture
def small_limits(settings):
    settings.OUTPUT_STREAM_MAX_BYTES = 64 * KB
    settings.OUTPUT_NOTEBOOK_MAX_BYTES = 1 * MB
    settings.OUTPUT_RENDER_MAX_BYTES = 512 * KB
    return settings


def notebook(tmp_path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    path = tmp_path / "in.ipynb"
    nbformat.write(nb, str(path))
    return path


def stream_text(cell) -> str:
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream")


def run(tmp_path, *sources):
    out = tmp_path / "out.ipynb"
    outcome = execute(notebook(tmp_path, *sources), out, {})
    nb = nbformat.read(str(out), as_version=4) if out.exists() else None
    return outcome, nb


@pytest.mark.slow
@pytest.mark.sandbox
def test_stream_output_past_the_cell_limit_is_cut_with_a_marker_and_the_run_goes_on(
    tmp_path, small_limits
):
    outcome, nb = run(
        tmp_path,
        # 200 KB in many writes to both streams, then one write of 100 KB.
        "import sys\n"
        "for i in range(100):\n"
        "    sys.stdout.write('o' * 1000); sys.stderr.write('e' * 1000)\n"
        "sys.stdout.flush(); sys.stderr.flush()\n"
        "print('x' * 100_000)",
        "print('next cell')",
    )
    assert outcome.status == OutcomeStatus.SUCCEEDED, outcome.message
    first, second = [c for c in nb.cells if c.cell_type == "code"][-2:]
    text = stream_text(first)
    marker = first.outputs[-1]["text"]
    kept = len(text) - len(marker)
    assert kept == 64 * KB
    # Everything written: 200,000 + 100,001 bytes (print's newline).
    assert f"[output truncated: {300_001 - kept} bytes over the 64 KB limit of this cell]" in marker
    assert stream_text(second) == "next cell\n"


@pytest.mark.slow
@pytest.mark.sandbox
def test_output_past_the_notebook_limit_fails_the_run_and_keeps_what_was_kept(
    tmp_path, small_limits
):
    # 60 KB per cell (under the cell limit), 30 cells: the 1 MB limit falls in cell 18.
    outcome, nb = run(tmp_path, *["print('y' * 60_000)"] * 30, "print('never')")
    assert outcome.status == OutcomeStatus.FAILED
    assert outcome.message == "output exceeded 1 MB"
    assert outcome.error["ename"] == "OutputLimitExceeded"
    assert outcome.output_path is not None
    code = [c for c in nb.cells if c.cell_type == "code"]
    kept = sum(len(stream_text(c)) for c in code)
    assert 900 * KB < kept <= 1 * MB + KB
    assert any("passed its limit of 1 MB" in stream_text(c) for c in code)
    assert "never" not in stream_text(code[-1])


@pytest.mark.slow
@pytest.mark.sandbox
def test_one_message_over_the_limit_is_never_read_and_fails_the_run(tmp_path, small_limits):
    # One print is one stream message: 8 MB, over the notebook limit and its envelope.
    outcome, nb = run(tmp_path, "print('kept')", "print('z' * 8_000_000)", "print('never')")
    assert outcome.status == OutcomeStatus.FAILED, outcome.message
    assert outcome.message == "output exceeded 1 MB"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "kept" in stream_text(code[-3])
    assert "zzz" not in stream_text(code[-2]) and "never" not in stream_text(code[-1])


@pytest.mark.slow
@pytest.mark.sandbox
def test_cleared_and_replaced_output_no_longer_counts(tmp_path, small_limits):
    # 100 × 50 KB shown = 5 MB sent, but at most 50 KB kept at a time.
    outcome, nb = run(
        tmp_path,
        "from IPython.display import clear_output, display, HTML\n"
        "handle = display(HTML('start'), display_id=True)\n"
        "for i in range(100):\n"
        "    clear_output(wait=True)\n"
        "    print(str(i) * 50_000)\n"
        "    handle.update(HTML('h' * 50_000))",
    )
    assert outcome.status == OutcomeStatus.SUCCEEDED, outcome.message
    assert "99" in stream_text(nb.cells[-1])


def test_sizes_are_given_in_words():
    assert executor.size_words(100 * MB) == "100 MB"
    assert executor.size_words(10 * MB) == "10 MB"
    assert executor.size_words(64 * KB) == "64 KB"
    assert executor.size_words(3 * 2**30 // 2) == "1.5 GB"
    assert executor.size_words(12) == "12 bytes"


def test_utf8_sizes_count_bytes_not_characters():
    assert executor.text_bytes("é" * 10) == 20
    assert executor.value_bytes({"a": ["é", 1]}) == 2 + 1 + 2 + 2 + 8
    assert executor._utf8_prefix("aé" * 5, 4) == "aéa"


# --- The run's end: stored outputs, render threshold, errors, downloads (no kernel) -------


@pytest.fixture
def claimed(make_job, alice):
    job = make_job("trivial.ipynb", max_retries=0)
    return services.claim_run(services.run_now(job, alice).pk, "w1")


def executed(tmp_path: Path, text: str) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(text)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nb.cells = [cell]
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.mark.django_db
def test_a_finished_run_records_its_bytes_and_loses_its_partial(
    claimed, tmp_path, django_capture_on_commit_callbacks
):
    partial = default_storage.save(f"runs/{claimed.uuid}/partial.html", ContentFile(b"<p>so far"))
    Run.objects.filter(pk=claimed.pk).update(partial_key=partial)
    path = executed(tmp_path, "hello")
    with django_capture_on_commit_callbacks(execute=True):
        done = services.finish_run(claimed, Outcome(OutcomeStatus.SUCCEEDED, path))
    assert done.partial_key == "" and not default_storage.exists(partial)
    files = (done.output_key, done.html_key, done.output_gzip_key, done.html_gzip_key)
    sizes = sum(default_storage.size(key) for key in files if key)
    assert done.output_bytes == sizes and sizes > path.stat().st_size


@pytest.mark.django_db
def test_an_output_over_the_render_limit_is_kept_unrendered_and_offered_as_ipynb(
    claimed, tmp_path, settings, alice_client
):
    settings.OUTPUT_RENDER_MAX_BYTES = 32 * KB
    path = executed(tmp_path, "w" * 40 * KB)
    done = services.finish_run(claimed, Outcome(OutcomeStatus.SUCCEEDED, path))
    assert done.output_key and done.html_key == ""
    # The .ipynb and its gzip copy (jobs.compression).
    assert done.output_bytes == path.stat().st_size + default_storage.size(done.output_gzip_key)
    page = alice_client.get(reverse("runs-detail", args=[done.pk])).content.decode()
    assert "too large to render here" in page and 'id="notebook-frame"' not in page
    assert reverse("runs-download", args=[done.pk, "ipynb"]) in page
    download = alice_client.get(reverse("runs-download", args=[done.pk, "ipynb"]))
    assert b"".join(download.streaming_content) == path.read_bytes()


@pytest.mark.django_db
def test_an_output_under_the_render_limit_is_shown(claimed, tmp_path, alice_client):
    done = services.finish_run(claimed, Outcome(OutcomeStatus.SUCCEEDED, executed(tmp_path, "x")))
    page = alice_client.get(reverse("runs-detail", args=[done.pk])).content.decode()
    assert 'id="notebook-frame"' in page and "too large to render" not in page


@pytest.mark.django_db
def test_error_fields_are_cut_before_the_database(claimed, settings):
    settings.RUN_ERROR_MAX_CHARS = 1000
    error = {
        "cell_index": 1,
        "ename": "E" * 5000,
        "evalue": "start " + "v" * 50_000,
        "traceback": "t" * 50_000 + " the raising line",
    }
    services.finish_run(claimed, Outcome(OutcomeStatus.FAILED, error=error, message="E: v"))
    run = Run.objects.get(pk=claimed.pk)
    assert len(run.error_ename) <= 200
    assert len(run.error_evalue) <= 1000 and run.error_evalue.startswith("start ")
    assert "characters cut" in run.error_evalue
    assert len(run.error_traceback) <= 1000 and run.error_traceback.endswith("the raising line")


@pytest.mark.django_db
def test_the_standalone_html_is_streamed_in_chunks(claimed, tmp_path, alice_client):
    # A page of about 3 MB: the download is made of chunks, never one whole body.
    cells = [f"print({i})" for i in range(3)]
    nb = nbformat.v4.new_notebook()
    for source in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="s" * MB)]
        nb.cells.append(cell)
    path = tmp_path / "big.ipynb"
    nbformat.write(nb, str(path))
    done = services.finish_run(claimed, Outcome(OutcomeStatus.SUCCEEDED, path))
    response = alice_client.get(reverse("runs-download", args=[done.pk, "html"]))
    assert response.streaming
    chunks = list(response.streaming_content)
    assert len(chunks) > 3 and max(map(len, chunks)) <= 5 * MB  # plotly.js is 4.6 MB
    body = b"".join(chunks)
    with default_storage.open(done.html_key, "rb") as stored:
        assert body == render.standalone_html(stored.read())


@pytest.mark.django_db
def test_a_small_standalone_html_is_the_same_streamed(claimed, tmp_path, alice_client):
    done = services.finish_run(claimed, Outcome(OutcomeStatus.SUCCEEDED, executed(tmp_path, "x")))
    with default_storage.open(done.html_key, "rb") as stored:
        page = stored.read()
    chunks = list(render.standalone_chunks(io.BytesIO(page)))
    assert b"".join(chunks) == render.standalone_html(page)
