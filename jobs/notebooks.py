"""Reading uploaded notebooks and their parameters.

``read_notebook`` turns uploaded bytes into a validated nbformat v4 notebook, with its
outputs dropped and its parameters read, or raises ``NotebookError`` with a message a user
can act on. ``inspect_parameters`` reads the ``parameters``-tagged cell with papermill's
own inspector and types each parameter; ``coerce_parameters`` validates values against
those types. A notebook without a ``parameters`` cell takes any parameters ("free"
parameters): papermill injects them at the top of the notebook, and so does the portal.

Uploads are checked cheaply first: the raw JSON's structure (types of the keys nbformat
and the portal read, number of cells, nesting depth) before ``nbformat.validate``, and the
outputs are dropped before it, so a large executed notebook costs about what its code
costs, and no malformed file reaches code that would fail on it.
"""

import ast
import copy
import datetime as dt
import hashlib
import json
import keyword
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

import nbformat
from django.conf import settings
from nbformat.v4.rwbase import rejoin_lines, strip_transient
from papermill.inspection import _infer_parameters

#: Parameter types the portal's forms know, in the order they are tried.
PARAMETER_TYPES = ("int", "float", "bool", "str", "list", "date")
#: Names the portal injects into every run; a notebook's own parameters may not use them.
RESERVED_PARAMETERS = ("run_id", "logical_date", "spark_master")
#: Names the portal injects into a continuous job's runs (``Run.injected_parameters``): its
#: durable directories (``Job.checkpoint_dir``, ``Job.output_dir``). A notebook may declare
#: them with defaults for development; a continuous job stores no values for them
#: (``services.jobs`` drops them, the API refuses them, the job form shows them read-only).
STREAM_PARAMETERS = ("checkpoint_dir", "output_dir")
#: A notebook with more cells than this is refused (it is almost surely not hand-written).
MAX_CELLS = 5000
#: Deepest nesting of JSON arrays and objects in what is kept of a notebook (its metadata,
#: and each cell's metadata, source and attachments); the notebook itself is at depth 1.
#: Real notebooks stay under 10. Python's JSON parser refuses deeper than about 1,000.
MAX_DEPTH = 64
#: Characters of the parameters cell. papermill's parameter pattern takes time quadratic
#: in the length of a definition, and a long default is not a form field anyone fills in.
MAX_PARAMETERS_CELL_CHARS = 10_000
#: Parameters of one notebook (each is a field of the job form).
MAX_PARAMETERS = 200
#: The newest nbformat 4 minor version nbformat (and so the portal) knows.
NBFORMAT_MINOR = nbformat.v4.nbformat_minor
CELL_TYPES = ("code", "markdown", "raw")


class NotebookError(ValueError):
    """An upload that is not a usable notebook; the message says why, for the user."""


@dataclass(frozen=True)
class ParsedNotebook:
    """A validated upload, ready to store.

    ``nb`` is the notebook without outputs or execution counts; ``data`` is the file the
    portal stores for it (UTF-8 JSON of ``nb``), ``size_bytes`` and ``sha256`` (hex) are
    that file's. ``parameter_schema`` is ``inspect_parameters(nb)``;
    ``has_parameters_cell`` tells whether a cell is tagged ``parameters`` (without one,
    any parameters are taken and injected at the top). ``uploaded_bytes`` is the size of
    the file as uploaded.
    """

    nb: nbformat.NotebookNode
    data: bytes
    size_bytes: int
    sha256: str
    cell_count: int
    code_cell_count: int
    parameter_schema: dict[str, dict]
    uploaded_bytes: int
    has_parameters_cell: bool = True


def read_notebook(data: bytes, max_bytes: int | None = None) -> ParsedNotebook:
    """Parse, check and validate notebook file contents; return what the portal stores.

    Accepts nbformat 4 JSON (minor versions 0 to NBFORMAT_MINOR). The outputs and execution
    counts of code cells are dropped before validation: runs execute the notebook afresh,
    so the portal stores (and offers for download as the version) the notebook without
    them. Everything else (sources, metadata, attachments, cell ids) is kept.

    Raises NotebookError, with a message for the person who uploaded it, for: more than
    ``max_bytes`` (default ``settings.NOTEBOOK_MAX_BYTES``); bytes that are not UTF-8 JSON;
    JSON nested more than MAX_DEPTH deep where it is kept; JSON that is not a notebook
    object; ``nbformat`` or ``nbformat_minor`` that are not whole numbers, or a version
    other than 4.0 to 4.NBFORMAT_MINOR; metadata, kernelspec, language or cells of the
    wrong type; more than MAX_CELLS cells; a notebook that fails ``nbformat.validate``; a
    language other than Python; and a parameters cell ``inspect_parameters`` refuses.
    """
    limit = settings.NOTEBOOK_MAX_BYTES if max_bytes is None else max_bytes
    if len(data) > limit:
        raise NotebookError(f"The file is {_mb(len(data))}; notebooks may be at most {_mb(limit)}.")
    if not data.strip():
        raise NotebookError("The file is empty.")
    raw = _parse_json(data)
    _check_structure(raw)
    code_cells = 0
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            code_cells += 1
            cell["outputs"] = []
            cell["execution_count"] = None
    try:
        nbformat.validate(raw)  # fills in missing cell ids of a 4.5 notebook
    except nbformat.ValidationError as exc:
        message = str(exc).splitlines()[0][:300]
        raise NotebookError(f"The notebook is not valid: {message}") from None
    stored = (json.dumps(raw, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
    # As nbformat.reads does: multi-line text joined into strings, as papermill expects.
    nb = strip_transient(rejoin_lines(nbformat.from_dict(raw)))
    language = _language(nb.metadata)
    if language and language.lower() != "python":
        raise NotebookError(
            f"Only Python notebooks can run here; this one is written in {language[:40]}."
        )
    return ParsedNotebook(
        nb=nb,
        data=stored,
        size_bytes=len(stored),
        sha256=hashlib.sha256(stored).hexdigest(),
        cell_count=len(nb.cells),
        code_cell_count=code_cells,
        parameter_schema=inspect_parameters(nb),
        uploaded_bytes=len(data),
        has_parameters_cell=parameters_cell(nb) is not None,
    )


def as_parsed(notebook: "ParsedNotebook | bytes") -> ParsedNotebook:
    """``notebook`` itself if it was read already (by a form), else ``read_notebook`` of
    its bytes: the services take either, so that a page reads an upload once."""
    if isinstance(notebook, ParsedNotebook):
        return notebook
    return read_notebook(notebook)


def _parse_json(data: bytes) -> Any:
    """The JSON value of ``data``; NotebookError if it is not UTF-8 JSON."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotebookError(
            f"The file is not text (UTF-8; bad byte at position {exc.start}): "
            "is it really an .ipynb notebook?"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"The file is not JSON ({exc.msg} at line {exc.lineno}): "
            "is it really an .ipynb notebook?"
        ) from None
    except RecursionError:
        raise NotebookError(
            f"The file's JSON is nested too deeply (more than {MAX_DEPTH} levels): "
            "it is not a notebook Jupyter wrote."
        ) from None


def _check_structure(raw: Any) -> None:
    """Check the types and sizes the portal and nbformat rely on, on the raw JSON, before
    anything walks it: NotebookError naming the first part that is wrong."""
    if not isinstance(raw, dict):
        kind = _json_type(raw)
        raise NotebookError(
            f"The file is JSON but not a Jupyter notebook (it is {kind}, not an object)."
        )
    if "cells" not in raw or "nbformat" not in raw:
        raise NotebookError(
            "The file is JSON but not a Jupyter notebook (no 'cells' or 'nbformat')."
        )
    version, minor = raw["nbformat"], raw.get("nbformat_minor")
    if not _is_int(version):
        raise _invalid(
            f"'nbformat' must be a whole number such as 4, not {_json_type(version)} "
            f"({_show(version)})."
        )
    if version != 4:
        raise NotebookError(
            f"Only nbformat 4 notebooks are supported; this one is version {version}."
        )
    if not _is_int(minor):
        raise _invalid(
            f"'nbformat_minor' must be a whole number such as {NBFORMAT_MINOR}, not "
            f"{_json_type(minor)} ({_show(minor)})."
        )
    if not 0 <= minor <= NBFORMAT_MINOR:
        raise _invalid(
            f"This notebook is nbformat 4.{minor}; the portal reads 4.0 to 4.{NBFORMAT_MINOR}. "
            "Save it with a current Jupyter."
        )
    metadata = raw.get("metadata")
    if not isinstance(metadata, dict):
        raise _invalid(f"'metadata' must be an object, not {_json_type(metadata)}.")
    for key, fields in (("kernelspec", ("name", "language")), ("language_info", ("name",))):
        if key not in metadata:
            continue
        part = metadata[key]
        if not isinstance(part, dict):
            raise _invalid(f"metadata.{key} must be an object, not {_json_type(part)}.")
        for name in fields:
            if name in part and not isinstance(part[name], str):
                raise _invalid(
                    f"metadata.{key}.{name} must be a string, not {_json_type(part[name])}."
                )
    cells = raw["cells"]
    if not isinstance(cells, list):
        raise _invalid(f"'cells' must be a list, not {_json_type(cells)}.")
    if len(cells) > MAX_CELLS:
        raise _invalid(f"The notebook has {len(cells)} cells; at most {MAX_CELLS} are allowed.")
    _check_depth(metadata, "the notebook's metadata", 2)
    for number, cell in enumerate(cells, 1):
        _check_cell(cell, number)


def _check_cell(cell: Any, number: int) -> None:
    if not isinstance(cell, dict):
        raise _invalid(f"Cell {number} must be an object, not {_json_type(cell)}.")
    kind = cell.get("cell_type")
    if kind not in CELL_TYPES:
        raise _invalid(
            f"Cell {number} has cell_type {_show(kind)}; it must be one of {', '.join(CELL_TYPES)}."
        )
    source = cell.get("source", "")
    if not (
        isinstance(source, str)
        or (isinstance(source, list) and all(isinstance(line, str) for line in source))
    ):
        raise _invalid(f"The source of cell {number} must be text or a list of lines.")
    for key in ("metadata", "attachments"):
        if key in cell and not isinstance(cell[key], dict):
            raise _invalid(
                f"The {key} of cell {number} must be an object, not {_json_type(cell[key])}."
            )
        _check_depth(cell.get(key), f"the {key} of cell {number}", 4)
    if kind == "code" and not isinstance(cell.get("outputs", []), list):
        raise _invalid(f"The outputs of cell {number} must be a list.")


def _check_depth(value: Any, where: str, depth: int) -> None:
    """NotebookError if ``value``, found at ``depth`` of the notebook (the notebook is 1),
    nests arrays and objects deeper than MAX_DEPTH. Iterative: any depth is safe to walk."""
    stack = [(value, depth)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            raise _invalid(
                f"The JSON of {where} is nested too deeply (more than {MAX_DEPTH} levels)."
            )
        stack.extend((child, depth + 1) for child in children)


def _invalid(problem: str) -> NotebookError:
    return NotebookError(f"The notebook is not valid: {problem}")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, with an article: "a list", "a number"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (int, float, str, bool, type(None))) else "..."
    return text if len(text) <= 40 else text[:37] + "..."


def _language(metadata: dict) -> str:
    """The notebook's language from its kernelspec, else its language_info ("" if none);
    the types were checked by _check_structure."""
    return (
        (metadata.get("kernelspec") or {}).get("language")
        or (metadata.get("language_info") or {}).get("name")
        or ""
    )


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The first cell tagged ``parameters`` (the one papermill injects after), or None."""
    return next(
        (c for c in nb.cells if "parameters" in (c.get("metadata", {}).get("tags") or [])), None
    )


def inspect_parameters(nb: nbformat.NotebookNode) -> dict[str, dict]:
    """The parameters of the ``parameters``-tagged cell, typed for forms.

    Returns ``{name: {"type": t, "default": value, "help": str}}`` in cell order, where ``t``
    is one of PARAMETER_TYPES and ``value`` is the JSON form of the default (dates as
    ``YYYY-MM-DD``). The type comes from the annotation when it names a known type, else
    from the default's literal; a string default that is an ISO date is a date; anything
    else (an expression, a literal too complex to read) is a str whose default is the
    source text. Uses ``papermill.inspect_notebook``'s parser (``_infer_parameters``) for
    the same reading as papermill itself. Raises NotebookError if a parameter uses a
    reserved name, or if the cell is longer than MAX_PARAMETERS_CELL_CHARS characters or
    has more than MAX_PARAMETERS parameters.
    """
    cell = parameters_cell(nb)
    if cell is None:
        return {}
    source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
    if len(source) > MAX_PARAMETERS_CELL_CHARS:
        raise NotebookError(
            f"The parameters cell is {len(source):,} characters long; at most "
            f"{MAX_PARAMETERS_CELL_CHARS:,} are allowed. Keep long values in another cell."
        )
    # Only the cell papermill reads, as papermill.iorw.load_notebook_node leaves it (tags
    # set): a copy of it, not of the whole notebook.
    only = nbformat.v4.new_notebook(metadata=copy.deepcopy(nb.metadata))
    only.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})]
    # papermill picks its translator by kernel name; ours is always Python.
    params = _infer_parameters(only, name="python3", language="python")
    if len(params) > MAX_PARAMETERS:
        raise NotebookError(
            f"The parameters cell sets {len(params)} parameters; at most {MAX_PARAMETERS} "
            "are allowed."
        )
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
    except (ValueError, TypeError, SyntaxError):
        value = source  # an expression such as date.today(): keep its text
    except (RecursionError, MemoryError):
        # Python's parser gives up on e.g. ``1+1+...+1`` of thousands of terms or
        # ``----1`` (RecursionError, or MemoryError for its own stack): text as well.
        value = source
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
            number = float(value)
        except (ValueError, TypeError, OverflowError):
            raise ValueError("expected a number") from None
        if not math.isfinite(number):  # JSON (and PostgreSQL's jsonb) has no inf or nan
            raise ValueError("expected a finite number")
        return number
    if kind == "list":
        return json_list(value)
    if kind == "date":
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()[:10]
        if not isinstance(value, str) or not _is_iso_date(value):
            raise ValueError("expected a date as YYYY-MM-DD")
        return value
    if not isinstance(value, str):
        raise ValueError("expected text")
    return value


def json_list(value: Any) -> list:
    """``value`` (a list, or its JSON text) as a list of JSON values; ValueError if it is
    not a list, nests too deeply for Python's parser, or holds what JSON cannot (inf, nan,
    sets...)."""
    not_a_list = 'expected a list, e.g. [1, 2] or ["a", "b"]'
    try:
        if isinstance(value, str):
            value = json.loads(value, parse_constant=_no_constant)
        if not isinstance(value, (list, tuple)):
            raise ValueError(not_a_list)
        # A round trip: tuples become lists, and anything JSON cannot hold is refused.
        return json.loads(json.dumps(list(value), allow_nan=False))
    except RecursionError:
        raise ValueError("the list is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        if str(exc) == not_a_list:
            raise
        raise ValueError(f"{not_a_list}, of numbers, text, true, false or null") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def coerce_parameters(schema: dict[str, dict], values: dict, *, free: bool = False) -> dict:
    """Validate ``values`` against ``schema`` (from inspect_parameters); return JSON values.

    ``free`` is for a notebook without a ``parameters`` cell (``has_parameters_cell``
    false): any name is taken, as papermill takes it, with a value that is null, a
    boolean, a number, text or a list (``free_value``).

    Raises ``ParameterError`` (a ValueError) listing every problem: names that are not
    Python identifiers (or are keywords), names the notebook does not declare (unless
    ``free``), reserved names, and values of the wrong type.
    """
    problems = []
    clean = {}
    for name, value in values.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            problems.append(f"{name!r} is not a valid parameter name")
        elif name in RESERVED_PARAMETERS:
            problems.append(f"{name!r} is reserved: the portal sets it for every run")
        elif free and name not in schema:
            try:
                clean[name] = free_value(value)
            except ValueError as exc:
                problems.append(f"{name}: {exc} (got {value!r})")
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


def free_value(value: Any) -> Any:
    """``value`` as the JSON value of a free parameter: null, a boolean, a finite number,
    text or a list of JSON values (lists as ``json_list`` takes them); ValueError for
    anything else (an object, inf, nan)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _coerce_one("float", value)
    if isinstance(value, (list, tuple)):
        return json_list(value)
    raise ValueError("expected a number, text, true or false, a list or null")


def free_type(value: Any) -> str:
    """The PARAMETER_TYPES name a free parameter's JSON value shows as in forms (text that
    is an ISO date is a date; null is text)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str) and _is_iso_date(value):
        return "date"
    return "str"


class ParameterError(ValueError):
    """Parameter values that do not fit the notebook; the message lists every problem."""
