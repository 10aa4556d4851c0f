"""Uploads are cheap to check: every malformed notebook gets a form error through the pages
(never a 500) and leaves nothing behind; a file past NOTEBOOK_MAX_BYTES is never kept whole;
a page reads an upload once; outputs are dropped before it is stored."""

import html
import json

import nbformat
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.urls import reverse

from jobs import notebooks
from jobs.models import Job, NotebookVersion
from tests.conftest import notebook_bytes
from tests.jobs.test_views import ALL_PARAMS, form_data

pytestmark = pytest.mark.django_db


def notebook(cells=None, **top) -> dict:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells or []}
    nb.update(top)
    return nb


def with_parameters(source: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    return nbformat.writes(nb).encode()


def dumps(value) -> bytes:
    return json.dumps(value).encode()


MALFORMED = [
    pytest.param("[" * 10_000 + "]" * 10_000, "nested too deeply", id="10000-nested-lists"),
    pytest.param(
        dumps(notebook(metadata={"x": json.loads("[" * 100 + "]" * 100)})),
        "nested too deeply",
        id="deep-metadata",
    ),
    pytest.param(dumps(notebook(nbformat=4.0)), "'nbformat' must be a whole number", id="4.0"),
    pytest.param(dumps(notebook(nbformat="4")), "'nbformat' must be a whole number", id="'4'"),
    pytest.param(dumps(notebook(nbformat_minor=5.0)), "'nbformat_minor' must be", id="minor"),
    pytest.param(dumps(notebook(nbformat_minor=999)), "the portal reads 4.0 to 4.5", id="future"),
    pytest.param(
        dumps(notebook(metadata={"kernelspec": {"name": "x", "language": 3}})),
        "metadata.kernelspec.language must be a string",
        id="language-number",
    ),
    pytest.param(
        dumps(notebook(metadata={"kernelspec": ["python"]})),
        "metadata.kernelspec must be an object",
        id="kernelspec-list",
    ),
    pytest.param(
        dumps(notebook(metadata={"language_info": {"name": None}})),
        "metadata.language_info.name must be a string",
        id="language-null",
    ),
    pytest.param(dumps(notebook(metadata=[])), "'metadata' must be an object", id="metadata-list"),
    pytest.param(b"\xef\xbb\xbf{\xff}", "not text (UTF-8", id="bad-utf8"),
    pytest.param(b"[1, 2, 3]", "it is a list, not an object", id="top-level-array"),
    pytest.param(dumps(notebook(cells=[1, "x"])), "Cell 1 must be an object", id="cell-number"),
    pytest.param(dumps(notebook(cells={"a": 1})), "'cells' must be a list", id="cells-object"),
    pytest.param(
        dumps(notebook(cells=[{"cell_type": "code", "source": [1]}])),
        "source of cell 1 must be text",
        id="source-numbers",
    ),
    pytest.param(
        dumps(notebook(cells=[{"cell_type": "code", "outputs": {}}])),
        "outputs of cell 1 must be a list",
        id="outputs-object",
    ),
    pytest.param(
        dumps(notebook(cells=[{"cell_type": "markdown", "source": ""}] * 5001)),
        "5001 cells; at most 5000",
        id="huge-cell-count",
    ),
    pytest.param(with_parameters("n = " + "+".join(["1"] * 3000)), None, id="1+1+...+1-is-text"),
    pytest.param(with_parameters("n = " + "-" * 4000 + "1"), None, id="----1-is-text"),
    pytest.param(
        with_parameters("n = 1" + " " * 20_000 + "# padding"),
        "parameters cell is 20,014 characters long",
        id="long-parameters-cell",
    ),
    pytest.param(with_parameters("run_id = 1"), "reserved", id="reserved-parameter"),
]


def _nothing_written(new_stored_files) -> None:
    assert Job.objects.count() == 0 and NotebookVersion.objects.count() == 0
    assert not new_stored_files()


@pytest.mark.parametrize(("content", "message"), MALFORMED)
def test_malformed_notebooks_get_a_form_error_on_the_new_job_page(
    alice_client, content, message, new_stored_files
):
    content = content.encode() if isinstance(content, str) else content
    data = form_data(notebook=SimpleUploadedFile("x.ipynb", content))
    response = alice_client.post(reverse("jobs-new"), data)
    if message is None:  # a default Python cannot parse is kept as text: the job is made
        assert response.status_code == 302
        assert Job.objects.get().versions.get().parameter_schema["n"]["type"] == "str"
        return
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert message in page
    _nothing_written(new_stored_files)


@pytest.mark.parametrize(("content", "message"), MALFORMED)
def test_malformed_notebooks_get_an_error_from_the_inspect_endpoint(alice_client, content, message):
    content = content.encode() if isinstance(content, str) else content
    response = alice_client.post(
        reverse("jobs-inspect"), {"notebook": SimpleUploadedFile("x.ipynb", content)}
    )
    assert response.status_code == 200
    fragment = html.unescape(response.content.decode())
    if message is None:
        assert 'name="param-n"' in fragment
    else:
        assert message in fragment


def test_a_non_finite_default_is_no_default(alice_client):
    """1e999 is inf in Python, which JSON (PostgreSQL's jsonb) cannot hold."""
    parsed = notebooks.read_notebook(with_parameters("ratio = 1e999"))
    assert parsed.parameter_schema["ratio"] == {"type": "float", "default": None, "help": ""}


def test_a_deeply_nested_list_value_is_a_form_error(alice_client):
    data = form_data(
        notebook=SimpleUploadedFile("t.ipynb", notebook_bytes("trivial.ipynb")),
        **{"param-items": "[" * 5000 + "]" * 5000},
    )
    response = alice_client.post(reverse("jobs-new"), data)
    assert response.status_code == 200
    assert "nested too deeply" in response.content.decode()
    assert Job.objects.count() == 0


class CountingHandler(FileUploadHandler):
    """Records the bytes the handlers after the size limit received, per file."""

    received: list[int] = []

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        CountingHandler.received.append(0)

    def receive_data_chunk(self, raw_data, start):
        CountingHandler.received[-1] += len(raw_data)
        return raw_data

    def file_complete(self, file_size):
        return None


@pytest.fixture
def counted_uploads(settings):
    settings.FILE_UPLOAD_HANDLERS = [
        "jobs.uploads.NotebookSizeLimit",
        "tests.jobs.test_upload_limits.CountingHandler",
        "django.core.files.uploadhandler.MemoryFileUploadHandler",
        "django.core.files.uploadhandler.TemporaryFileUploadHandler",
    ]
    settings.NOTEBOOK_MAX_BYTES = 1024 * 1024
    CountingHandler.received = []
    return CountingHandler.received


def test_a_file_past_the_limit_is_not_kept_and_the_form_says_so(
    alice_client, counted_uploads, new_stored_files
):
    big = b"x" * (5 * 1024 * 1024)
    response = alice_client.post(
        reverse("jobs-new"), form_data(notebook=SimpleUploadedFile("big.ipynb", big))
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "The file is larger than 1 MB (5 MB)" in page
    # The fields after the file were read: the form comes back filled in.
    assert 'value="My job"' in page
    # The handlers that keep files got no more than the limit of the 5 MB.
    assert counted_uploads and max(counted_uploads) <= 1024 * 1024
    _nothing_written(new_stored_files)


def test_a_file_within_the_limit_goes_through(alice_client, counted_uploads):
    response = alice_client.post(
        reverse("jobs-new"),
        form_data(
            notebook=SimpleUploadedFile("t.ipynb", notebook_bytes("trivial.ipynb")), **ALL_PARAMS
        ),
    )
    assert response.status_code == 302 and Job.objects.count() == 1
    assert counted_uploads == [len(notebook_bytes("trivial.ipynb"))]


def test_the_default_limit_is_20_mb_in_the_message(alice_client, settings):
    """The message a user sees at the default limit, from the inspect endpoint too."""
    assert settings.NOTEBOOK_MAX_BYTES == 20 * 1024 * 1024
    big = b" " * (20 * 1024 * 1024 + 1)
    response = alice_client.post(
        reverse("jobs-inspect"), {"notebook": SimpleUploadedFile("big.ipynb", big)}
    )
    assert "larger than 20 MB" in response.content.decode()


def test_creating_a_job_reads_the_notebook_once(alice_client, monkeypatch):
    calls = []
    real = notebooks.read_notebook

    def counting(data, *args, **kwargs):
        calls.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(notebooks, "read_notebook", counting)
    upload = SimpleUploadedFile("t.ipynb", notebook_bytes("trivial.ipynb"))
    data = form_data(notebook=upload, **ALL_PARAMS)
    assert alice_client.post(reverse("jobs-new"), data).status_code == 302
    assert len(calls) == 1
    job = Job.objects.get()
    upload = SimpleUploadedFile("t2.ipynb", notebook_bytes("trivial.ipynb"))
    alice_client.post(reverse("jobs-upload", args=[job.pk]), {"notebook": upload})
    assert len(calls) == 2 and job.versions.count() == 2


def executed(nb_source: str = "print(1)") -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "P", "language": "python"}
    cell = nbformat.v4.new_code_cell(nb_source, execution_count=3, id="code")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="x" * 100_000),
        nbformat.v4.new_output("display_data", data={"text/html": "<b>" * 1000}),
    ]
    nb.cells = [cell, nbformat.v4.new_markdown_cell("# Notes", id="notes")]
    return nbformat.writes(nb).encode()


def test_outputs_are_dropped_and_the_stored_file_is_the_notebook_without_them(
    alice_client,
):
    upload = executed()
    data = form_data(notebook=SimpleUploadedFile("e.ipynb", upload))
    assert alice_client.post(reverse("jobs-new"), data).status_code == 302
    version = Job.objects.get().versions.get()
    with default_storage.open(version.storage_key, "rb") as f:
        stored = f.read()
    nb = nbformat.reads(stored.decode(), as_version=4)
    code = nb.cells[0]
    assert code.outputs == [] and code.execution_count is None
    assert code.source == "print(1)" and nb.cells[1].source == "# Notes"
    assert nb.metadata.kernelspec.name == "python3"
    assert version.size_bytes == len(stored) < len(upload) // 50
    assert version.cell_count == 2 and version.code_cell_count == 1


def test_the_same_code_with_other_outputs_is_the_same_notebook():
    """What runnotebook compares to decide whether a file is a new version."""
    a = notebooks.read_notebook(executed())
    nb = nbformat.reads(executed().decode(), as_version=4)
    nb.cells[0].outputs = []
    b = notebooks.read_notebook(nbformat.writes(nb).encode())
    assert a.sha256 == b.sha256 and a.data == b.data
    assert notebooks.read_notebook(executed("print(2)")).sha256 != a.sha256
