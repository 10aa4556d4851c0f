"""Uploaded notebooks: validation of bad files and typing of parameters."""

import json

import nbformat
import pytest

from jobs import notebooks
from jobs.notebooks import NotebookError, ParameterError
from tests.conftest import notebook_bytes


def test_the_example_notebook_is_accepted_and_typed():
    parsed = notebooks.read_notebook(notebook_bytes("telemetry_hello_world.ipynb"))
    schema = notebooks.inspect_parameters(parsed.nb)
    assert {name: spec["type"] for name, spec in schema.items()} == {
        "data_path": "str",
        "channel": "str",
        "sample_fraction": "float",
        "top_n": "int",
        "title": "str",
    }
    assert schema["top_n"]["default"] == 10


def test_parameter_types_are_inferred_from_defaults():
    schema = notebooks.inspect_parameters(
        notebooks.read_notebook(notebook_bytes("trivial.ipynb")).nb
    )
    assert {n: (s["type"], s["default"]) for n, s in schema.items()} == {
        "x": ("int", 1),
        "name": ("str", "world"),
        "ratio": ("float", 0.5),
        "flag": ("bool", True),
        "items": ("list", [1, 2]),
        "day": ("date", "2026-01-31"),
    }
    assert schema["x"]["help"] == "a number"


def test_annotations_win_over_defaults():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("limit: float = 3\nwhen: date = None")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    schema = notebooks.inspect_parameters(notebooks.read_notebook(nbformat.writes(nb).encode()).nb)
    assert schema["limit"] == {"type": "float", "default": 3.0, "help": ""}
    assert schema["when"]["type"] == "date"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not text"),
        (b"print('hello')", "not JSON"),
        (b'{"a": 1}', "not a Jupyter notebook"),
        (
            json.dumps({"nbformat": 3, "nbformat_minor": 0, "cells": [], "metadata": {}}).encode(),
            "nbformat 4",
        ),
        (
            json.dumps(
                {
                    "nbformat": 4,
                    "nbformat_minor": 4,
                    "cells": [{"cell_type": "code"}],
                    "metadata": {},
                }
            ).encode(),
            "not valid",
        ),
    ],
)
def test_bad_files_are_rejected_with_a_clear_message(data, message):
    with pytest.raises(NotebookError) as exc:
        notebooks.read_notebook(data)
    assert message in str(exc.value)


def test_oversized_file_is_rejected_before_parsing():
    with pytest.raises(NotebookError, match="at most 0.0 MB"):
        notebooks.read_notebook(notebook_bytes("trivial.ipynb"), max_bytes=10)


def test_other_languages_are_rejected():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    with pytest.raises(NotebookError, match="written in R"):
        notebooks.read_notebook(nbformat.writes(nb).encode())


def test_reserved_parameter_names_are_rejected():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run_id = 'x'")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    with pytest.raises(NotebookError, match="reserved"):
        notebooks.inspect_parameters(notebooks.read_notebook(nbformat.writes(nb).encode()).nb)


SCHEMA = {
    "n": {"type": "int"},
    "f": {"type": "float"},
    "b": {"type": "bool"},
    "s": {"type": "str"},
    "l": {"type": "list"},
    "d": {"type": "date"},
}


def test_values_are_coerced_to_the_parameter_types():
    values = notebooks.coerce_parameters(
        SCHEMA, {"n": "7", "f": 2, "b": "true", "s": "x", "l": "[1, 2]", "d": "2026-02-03"}
    )
    assert values == {"n": 7, "f": 2.0, "b": True, "s": "x", "l": [1, 2], "d": "2026-02-03"}


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"n": "seven"}, "n: expected a whole number"),
        ({"n": 1.5}, "n: expected a whole number"),
        ({"f": "abc"}, "f: expected a number"),
        ({"b": "maybe"}, "b: expected true or false"),
        ({"l": "{}"}, "l: expected a list"),
        ({"d": "03/02/2026"}, "d: expected a date"),
        ({"s": 5}, "s: expected text"),
        ({"nope": 1}, "no parameter 'nope'"),
        ({"1bad": 1}, "not a valid parameter name"),
        ({"logical_date": "x"}, "reserved"),
    ],
)
def test_wrong_types_and_unknown_names_are_refused(values, fragment):
    with pytest.raises(ParameterError) as exc:
        notebooks.coerce_parameters(SCHEMA, values)
    assert fragment in str(exc.value)
