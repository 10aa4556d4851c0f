"""Reading uploaded notebooks and their parameters.

``read_notebook`` turns uploaded bytes into a validated nbformat v4 notebook or raises
``NotebookError`` with a message a user can act on. ``inspect_parameters`` reads the
``parameters``-tagged cell with papermill's own inspector and types each parameter;
``coerce_parameters`` validates values against those types.
"""

import ast
import copy
import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import nbformat
from django.conf import settings
from papermill.inspection import _infer_parameters

#: Parameter types the portal's forms know, in the order they are tried.
PARAMETER_TYPES = ("int", "float", "bool", "str", "list", "date")
#: Names the portal injects into every run; a notebook's own parameters may not use them.
RESERVED_PARAMETERS = ("run_id", "logical_date", "spark_master")
#: A notebook with more cells than this is refused (it is almost surely not hand-written).
MAX_CELLS = 5000


class NotebookError(ValueError):
    """An upload that is not a usable notebook; the message says why, for the user."""


@dataclass(frozen=True)
class ParsedNotebook:
    """A validated upload: the notebook, its bytes' size and SHA-256, and cell counts."""

    nb: nbformat.NotebookNode
    size_bytes: int
    sha256: str
    cell_count: int
    code_cell_count: int


def read_notebook(data: bytes, max_bytes: int | None = None) -> ParsedNotebook:
    """Parse and validate notebook file contents.

    Accepts nbformat 4 JSON (older v4 minor versions are upgraded by nbformat). Raises
    NotebookError for: more than ``max_bytes`` (default ``settings.NOTEBOOK_MAX_BYTES``),
    bytes that are not UTF-8 JSON, JSON that is not a notebook, a notebook that fails
    ``nbformat.validate``, a major version other than 4, more than ``MAX_CELLS`` cells, or a
    language other than Python.
    """
    limit = settings.NOTEBOOK_MAX_BYTES if max_bytes is None else max_bytes
    if len(data) > limit:
        raise NotebookError(f"The file is {_mb(len(data))}; notebooks may be at most {_mb(limit)}.")
    if not data.strip():
        raise NotebookError("The file is empty.")
    try:
        text = data.decode("utf-8-sig")
        raw = json.loads(text)
    except UnicodeDecodeError:
        raise NotebookError(
            "The file is not text (UTF-8): is it really an .ipynb notebook?"
        ) from None
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"The file is not JSON ({exc.msg} at line {exc.lineno}): "
            "is it really an .ipynb notebook?"
        ) from None
    if not isinstance(raw, dict) or "cells" not in raw or "nbformat" not in raw:
        raise NotebookError(
            "The file is JSON but not a Jupyter notebook (no 'cells' or 'nbformat')."
        )
    if raw.get("nbformat") != 4:
        raise NotebookError(
            f"Only nbformat 4 notebooks are supported; this one is version {raw.get('nbformat')!r}."
        )
    try:
        nbformat.validate(raw)
        # reads() also joins multi-line sources stored as lists, as papermill expects.
        nb = nbformat.reads(text, as_version=4)
    except nbformat.ValidationError as exc:
        message = str(exc).splitlines()[0]
        raise NotebookError(f"The notebook is not valid: {message}") from None
    if len(nb.cells) > MAX_CELLS:
        raise NotebookError(
            f"The notebook has {len(nb.cells)} cells; at most {MAX_CELLS} are allowed."
        )
    language = nb.metadata.get("kernelspec", {}).get("language") or nb.metadata.get(
        "language_info", {}
    ).get("name")
    if language and language.lower() != "python":
        raise NotebookError(
            f"Only Python notebooks can run here; this one is written in {language}."
        )
    return ParsedNotebook(
        nb=nb,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        cell_count=len(nb.cells),
        code_cell_count=sum(1 for c in nb.cells if c.cell_type == "code"),
    )


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def inspect_parameters(nb: nbformat.NotebookNode) -> dict[str, dict]:
    """The parameters of the ``parameters``-tagged cell, typed for forms.

    Returns ``{name: {"type": t, "default": value, "help": str}}`` in cell order, where ``t``
    is one of PARAMETER_TYPES and ``value`` is the JSON form of the default (dates as
    ``YYYY-MM-DD``). The type comes from the annotation when it names a known type, else
    from the default's literal; a string default that is an ISO date is a date; anything
    else is a str whose default is the source text. Uses ``papermill.inspect_notebook``'s
    parser (``_infer_parameters``) for the same reading as papermill itself.
    Raises NotebookError if a parameter uses a reserved name.
    """
    nb = copy.deepcopy(nb)
    for cell in nb.cells:  # as papermill.iorw.load_notebook_node does
        cell.metadata.setdefault("tags", [])
    # papermill picks its translator by kernel name; ours is always Python.
    params = _infer_parameters(nb, name="python3", language="python")
    out: dict[str, dict] = {}
    for p in params:
        name = p.name
        if name in RESERVED_PARAMETERS:
            raise NotebookError(
                f"The parameter {name!r} is reserved: the portal sets it for every run. Rename it."
            )
        kind, default = _type_of(p.inferred_type_name or "None", p.default or "")
        out[name] = {"type": kind, "default": default, "help": p.help or ""}
    return out


_ANNOTATIONS = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "list": "list",
    "List": "list",
    "date": "date",
    "datetime.date": "date",
}


def _type_of(annotation: str, source: str):
    """(type, JSON default) for one parameter from its annotation and default source."""
    try:
        value = ast.literal_eval(source) if source else None
    except (ValueError, SyntaxError):
        value = source  # an expression such as date.today(): keep its text
    kind = _ANNOTATIONS.get(annotation.split("[")[0].strip())
    if kind is None:
        if isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, int):
            kind = "int"
        elif isinstance(value, float):
            kind = "float"
        elif isinstance(value, (list, tuple)):
            kind, value = "list", list(value)
        elif isinstance(value, str) and _is_iso_date(value):
            kind = "date"
        else:
            kind = "str"
            value = value if isinstance(value, str) else source
    try:
        return kind, _coerce_one(kind, value)
    except ValueError:
        return kind, None


def _is_iso_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _coerce_one(kind: str, value):
    """Coerce one value to ``kind``'s JSON form; raises ValueError if it does not fit."""
    if value is None:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError("expected true or false")
    if kind == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected a whole number")
        try:
            return int(value)
        except (ValueError, TypeError):
            raise ValueError("expected a whole number") from None
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            return float(value)
        except (ValueError, TypeError):
            raise ValueError("expected a number") from None
    if kind == "list":
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, list):
            raise ValueError('expected a list, e.g. [1, 2] or ["a", "b"]')
        return value
    if kind == "date":
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()[:10]
        if not isinstance(value, str) or not _is_iso_date(value):
            raise ValueError("expected a date as YYYY-MM-DD")
        return value
    if not isinstance(value, str):
        raise ValueError("expected text")
    return value


def coerce_parameters(schema: dict[str, dict], values: dict) -> dict:
    """Validate ``values`` against ``schema`` (from inspect_parameters); return JSON values.

    Raises ``ParameterError`` (a ValueError) listing every problem: names that are not
    Python identifiers, names the notebook does not declare, reserved names, and values
    of the wrong type.
    """
    problems = []
    clean = {}
    for name, value in values.items():
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(f"{name!r} is not a valid parameter name")
        elif name in RESERVED_PARAMETERS:
            problems.append(f"{name!r} is reserved: the portal sets it for every run")
        elif name not in schema:
            known = ", ".join(schema) or "none"
            problems.append(f"the notebook has no parameter {name!r} (its parameters: {known})")
        else:
            try:
                clean[name] = _coerce_one(schema[name]["type"], value)
            except (ValueError, TypeError, json.JSONDecodeError) as exc:
                problems.append(f"{name}: {exc} (got {value!r})")
    if problems:
        raise ParameterError("; ".join(problems))
    return clean


class ParameterError(ValueError):
    """Parameter values that do not fit the notebook; the message lists every problem."""
