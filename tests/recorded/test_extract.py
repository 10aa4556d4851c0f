"""Recorded values are read from scrapbook's output format, typed and bounded, and a run's
values replace its earlier ones; nothing a notebook holds makes the reader raise."""

import base64
import json

import IPython.display
import pandas as pd
import plotly.graph_objects as go
import pytest
import scrapbook

from jobs.models import Run
from recorded.extract import Extraction, read_notebook_values, read_output_values, record_values
from recorded.models import RecordedValue

pytestmark = pytest.mark.filterwarnings("ignore:No kernel detected:UserWarning")


@pytest.fixture
def glued(monkeypatch):
    """``glue(name, value, **kw)`` with scrapbook's own code, its display outputs captured
    as the kernel writes them; ``notebook()`` is a notebook of one cell holding them."""
    outputs: list[dict] = []

    def display(data, metadata=None, raw=False):
        outputs.append({"output_type": "display_data", "data": data, "metadata": metadata or {}})

    monkeypatch.setattr(IPython.display, "display", display)

    def glue(name, value, **kwargs):
        scrapbook.glue(name, value, **kwargs)

    def notebook():
        # Through JSON, as the output notebook is read.
        return json.loads(json.dumps({"cells": [{"cell_type": "code", "outputs": outputs}]}))

    glue.notebook = notebook
    glue.outputs = outputs
    return glue


def by_name(extraction):
    return {v.name: v for v in extraction.values}


def test_numbers_and_strings_are_typed(glued):
    glued("pings_windows", 1234)
    glued("ratio", 0.25)
    glued("label", "nightly")
    glued("flag", True)
    glued("infinite", float("inf"))
    values = by_name(read_notebook_values(glued.notebook()))
    assert (values["pings_windows"].kind, values["pings_windows"].number) == ("number", 1234.0)
    assert (values["ratio"].kind, values["ratio"].number) == ("number", 0.25)
    assert (values["label"].kind, values["label"].text) == ("text", "nightly")
    assert (values["flag"].kind, values["flag"].data) == ("other", True)
    assert values["infinite"].kind == "other" and values["infinite"].number is None
    assert list(values) == ["pings_windows", "ratio", "label", "flag", "infinite"]


def test_a_dataframe_is_a_table_without_its_index(glued):
    df = pd.DataFrame({"os": ["Windows", "Linux"], "count": [3, 4]}, index=[7, 9])
    glued("per_os", df)
    table = by_name(read_notebook_values(glued.notebook()))["per_os"]
    assert table.kind == "table"
    assert table.data == {"columns": ["os", "count"], "rows": [["Windows", 3], ["Linux", 4]]}
    assert table.note == ""


def test_a_dataframe_glued_with_display_stays_a_table(glued):
    glued("per_os", pd.DataFrame({"a": [1]}), display=True)
    assert by_name(read_notebook_values(glued.notebook()))["per_os"].kind == "table"


def test_a_plotly_figure_glued_with_display_is_a_figure(glued):
    glued("chart", go.Figure(go.Bar(x=["a", "b"], y=[1, 2])), display=True)
    # As in a kernel: the figure displays itself, then glue's marker output has no data.
    assert [bool(o["data"]) for o in glued.outputs] == [True, False]
    figure = by_name(read_notebook_values(glued.notebook()))["chart"]
    assert figure.kind == "figure"
    assert figure.data["data"][0]["y"] == [1, 2]


def test_a_name_glued_again_keeps_its_last_value_in_its_first_place(glued):
    glued("a", 1)
    glued("b", 2)
    glued("a", 3)
    values = read_notebook_values(glued.notebook()).values
    assert [(v.name, v.number) for v in values] == [("a", 3.0), ("b", 2.0)]


def test_malformed_scraps_are_skipped_and_others_kept(glued):
    glued("good", 1)
    nb = glued.notebook()
    outputs = nb["cells"][0]["outputs"]
    outputs += [
        {"output_type": "display_data", "data": {"application/scrapbook.scrap.json+json": "x"}},
        {"output_type": "display_data", "data": {"application/scrapbook.scrap.json+json": {}}},
        {
            "output_type": "display_data",
            "data": {
                "application/scrapbook.scrap.json+json": {"name": 5, "data": 1, "encoder": "json"}
            },
        },
        {
            "output_type": "display_data",
            "data": {
                "application/scrapbook.scrap.pandas+json": {
                    "name": "bad_table",
                    "data": "%%%",
                    "encoder": "pandas",
                }
            },
        },
        {
            "output_type": "display_data",
            "data": {
                "application/scrapbook.scrap.pandas+json": {
                    "name": "junk_table",
                    "data": base64.b64encode(b"not parquet").decode(),
                    "encoder": "pandas",
                }
            },
        },
        {"output_type": "stream", "text": "hello"},
        "not an output",
    ]
    nb["cells"].append("not a cell")
    values = by_name(read_notebook_values(nb))
    assert set(values) == {"good", "bad_table", "junk_table"}
    assert values["bad_table"].data is None and values["bad_table"].note.startswith("Not readable")
    assert values["junk_table"].data is None and values["junk_table"].note.startswith(
        "Not readable"
    )
    assert read_notebook_values({"cells": "nope"}).values == []
    assert read_notebook_values([]).values == []


def test_what_passes_a_bound_is_cut_or_dropped_with_a_note(glued, settings):
    settings.RECORDED_MAX_VALUES = 5
    settings.RECORDED_NAME_MAX_CHARS = 10
    settings.RECORDED_TEXT_MAX_CHARS = 20
    settings.RECORDED_TABLE_MAX_ROWS = 3
    settings.RECORDED_TABLE_MAX_COLUMNS = 2
    settings.RECORDED_FIGURE_MAX_BYTES = 500
    glued("a_very_long_name_indeed", 1)
    glued("text", "x" * 50)
    glued("table", pd.DataFrame({"a": range(10), "b": range(10), "c": range(10)}))
    glued("figure", go.Figure(go.Scatter(y=list(range(500)))), display=True)
    glued("json", {"k": "v" * 100})
    for i in range(3):
        glued(f"more{i}", i)
    extraction = read_notebook_values(glued.notebook())
    values = by_name(extraction)
    assert list(values) == ["a_very_lon", "text", "table", "figure", "json"]
    assert extraction.dropped == 3
    assert values["a_very_lon"].note == "Name cut from 23 characters."
    assert values["text"].text == "x" * 20 and values["text"].note == "Cut to 20 of 50 characters."
    assert values["table"].data == {"columns": ["a", "b"], "rows": [[0, 0], [1, 1], [2, 2]]}
    assert values["table"].note == "Cut to 3 of 10 rows and 2 of 3 columns."
    assert values["figure"].data is None and values["figure"].note.startswith("Not kept")
    assert values["json"].data is None and values["json"].note.startswith("Not kept")


def test_an_output_file_that_is_missing_large_or_not_json_has_no_values(tmp_path, settings):
    assert read_output_values(None).values == []
    assert read_output_values(tmp_path / "missing.ipynb").values == []
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    assert read_output_values(bad).values == []
    settings.RECORDED_NOTEBOOK_MAX_BYTES = 3
    assert read_output_values(bad).values == []


@pytest.mark.django_db
def test_a_runs_values_replace_its_earlier_ones(glued, make_job, alice):
    job = make_job()
    run = Run.objects.create(job=job, version=job.latest_version())
    glued("a", 1)
    glued("b", "text")
    assert record_values(run, read_notebook_values(glued.notebook())) == 2
    assert (
        record_values(run, Extraction(values=[read_notebook_values(glued.notebook()).values[0]]))
        == 1
    )
    assert list(run.recorded_values.values_list("name", "number")) == [("a", 1.0)]


@pytest.mark.django_db
def test_a_database_error_is_logged_and_keeps_the_earlier_values(glued, make_job, caplog):
    job = make_job()
    run = Run.objects.create(job=job, version=job.latest_version())
    glued("a", 1)
    record_values(run, read_notebook_values(glued.notebook()))
    broken = read_notebook_values(glued.notebook())
    broken.values.append(broken.values[0])  # the same name twice breaks the unique constraint
    assert record_values(run, broken) == 0
    assert list(RecordedValue.objects.filter(run=run).values_list("name", "kind")) == [
        ("a", "number")
    ]
    assert "recorded values not stored" in caplog.text
