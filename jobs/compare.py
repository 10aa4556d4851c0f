"""Compare two runs (A, B): parameters, notebook version, recorded values, and the output
notebooks cell by cell, on nbdime's diff engine (``nbdime.diff_notebooks``; its web app
is never used).

Parameters and recorded values (as short text) are plain data that the portal page shows
itself (escaped). Cells hold
untrusted notebook source and output: their side-by-side page is rendered by the portal's
own pipeline (``jobs.render``, template ``portal_compare``: nh3, no JavaScript outputs,
Plotly from inert JSON), stored next to run A's files, and served only from the
user-content origin (``portal.usercontent.comparison_url``) in a sandboxed iframe.

A run whose output notebook is missing (not finished, cancelled early, expired) or larger
than ``COMPARE_MAX_BYTES`` still compares by parameters and version; ``cells`` is then
None and ``unavailable`` says why.
"""

import copy
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import nbdime
import nbformat
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from jobs import render
from jobs.models import Run

#: Bytes of each output notebook above which the cells are not compared: diffing and
#: rendering happen in the web request that first asks, so they are bounded well below
#: the worker's OUTPUT_RENDER_MAX_BYTES.
COMPARE_MAX_BYTES = 10 * 2**20
#: Lines of one cell's source diff kept; the rest is cut with a note.
DIFF_MAX_LINES = 400

ADDED, REMOVED, CHANGED, UNCHANGED = "added", "removed", "changed", "unchanged"


class OutputUnavailable(Exception):
    """A run's output notebook cannot be compared; the message says why, for people."""


@dataclass(frozen=True)
class ParameterRow:
    """One parameter name of either run, with its value in each (JSON values)."""

    name: str
    a: Any
    b: Any
    in_a: bool
    in_b: bool

    @property
    def changed(self) -> bool:
        return self.in_a != self.in_b or self.a != self.b

    @property
    def a_text(self) -> str:
        return json.dumps(self.a, ensure_ascii=False) if self.in_a else "—"

    @property
    def b_text(self) -> str:
        return json.dumps(self.b, ensure_ascii=False) if self.in_b else "—"


@dataclass(frozen=True)
class ValueRow:
    """One name recorded by either run (``recorded.RecordedValue``), each side's value as
    short text (None where the run recorded no such name)."""

    name: str
    a: str | None
    b: str | None
    changed: bool


@dataclass(frozen=True)
class CellRow:
    """One row of the cell alignment: a cell of A matched with one of B by nbdime, or a
    cell only one run has. Indexes are 0-based positions in each output notebook."""

    index: int
    status: str  # ADDED (B only), REMOVED (A only), CHANGED or UNCHANGED
    a_index: int | None
    b_index: int | None
    cell_type: str
    source_changed: bool = False
    outputs_changed: bool = False
    #: The unified diff of the source, as (kind, line) with kind "add", "del" or "ctx".
    source_diff: tuple[tuple[str, str], ...] = ()


@dataclass
class Comparison:
    a: Run
    b: Run
    parameters: list[ParameterRow]
    version_changed: bool
    values: list[ValueRow]
    #: None when either output notebook cannot be compared (``unavailable`` says why).
    cells: list[CellRow] | None
    unavailable: str = ""
    notebooks: tuple[nbformat.NotebookNode, nbformat.NotebookNode] | None = field(
        default=None, repr=False
    )

    @property
    def changed_parameters(self) -> list[str]:
        return [row.name for row in self.parameters if row.changed]


# --- Parameters ----------------------------------------------------------------------------


def effective_parameters(run: Run) -> dict[str, Any]:
    """The values ``run`` ran with: its own, else its notebook version's defaults (as the
    run page shows them)."""
    schema = run.version.parameter_schema or {}
    values = {name: spec.get("default") for name, spec in schema.items()}
    values.update(run.parameters or {})
    return values


def parameter_rows(a: Run, b: Run) -> list[ParameterRow]:
    """Every parameter name of either run, A's order first, then B's new ones."""
    pa, pb = effective_parameters(a), effective_parameters(b)
    names = list(pa) + [name for name in pb if name not in pa]
    return [
        ParameterRow(name, pa.get(name), pb.get(name), name in pa, name in pb) for name in names
    ]


# --- Recorded values -----------------------------------------------------------------------

#: Characters of a text or JSON value shown in the comparison.
VALUE_SHOWN_CHARS = 200


def _value_text(value) -> str:
    """A recorded value as short text: a number, the text, a table's shape, "figure"."""
    kind = value.kind
    if kind == "number" and value.number is not None:
        return f"{value.number:g}"
    if kind == "table" and isinstance(value.data, dict):
        rows, columns = value.data.get("rows") or [], value.data.get("columns") or []
        return f"table, {len(rows)} rows × {len(columns)} columns"
    if kind == "figure":
        return "figure"
    text = value.text if value.data is None else json.dumps(value.data, ensure_ascii=False)
    return text if len(text) <= VALUE_SHOWN_CHARS else text[:VALUE_SHOWN_CHARS] + "…"


def value_rows(a: Run, b: Run) -> list[ValueRow]:
    """Every name either run recorded, A's order first; ``changed`` when only one run has
    it or the values differ (kind, number, text or data)."""
    va = {v.name: v for v in a.recorded_values.all()}
    vb = {v.name: v for v in b.recorded_values.all()}
    rows = []
    for name in list(va) + [n for n in vb if n not in va]:
        x, y = va.get(name), vb.get(name)
        same = (
            x is not None
            and y is not None
            and (x.kind, x.number, x.text, x.data) == (y.kind, y.number, y.text, y.data)
        )
        rows.append(
            ValueRow(
                name,
                _value_text(x) if x is not None else None,
                _value_text(y) if y is not None else None,
                not same,
            )
        )
    return rows


# --- Output notebooks ------------------------------------------------------------------------


def load_output(run: Run) -> nbformat.NotebookNode:
    """The stored output notebook of ``run``. Raises OutputUnavailable, saying why, when
    there is none, it expired, or it is larger than COMPARE_MAX_BYTES."""
    label = f"Run #{run.pk}"
    if run.output_expired_at is not None:
        day = run.output_expired_at.date().isoformat()
        raise OutputUnavailable(f"{label}'s output expired on {day} (the job's retention).")
    if not run.output_key or not default_storage.exists(run.output_key):
        if run.is_active:
            raise OutputUnavailable(f"{label} has not finished: it has no output yet.")
        raise OutputUnavailable(f"{label} has no output notebook.")
    size = default_storage.size(run.output_key)
    if size > COMPARE_MAX_BYTES:
        raise OutputUnavailable(
            f"{label}'s output notebook is too large to compare here "
            f"({size / 2**20:.1f} MiB; the limit is {COMPARE_MAX_BYTES / 2**20:.0f} MiB). "
            "Download both notebooks to compare them."
        )
    with default_storage.open(run.output_key, "rb") as fh:
        try:
            return nbformat.read(fh, as_version=4)
        except Exception as exc:  # stored by the portal, but a broken file is no 500
            raise OutputUnavailable(f"{label}'s output notebook cannot be read: {exc}") from None


def _outputs(cell: dict) -> list[dict]:
    """A cell's outputs without what differs between identical runs (execution counts,
    transient display ids)."""
    outputs = []
    for output in cell.get("outputs", []):
        kept = {k: v for k, v in output.items() if k not in ("execution_count", "transient")}
        outputs.append(kept)
    return outputs


def _source_diff(a: str, b: str) -> tuple[tuple[str, str], ...]:
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=2))[2:]
    kinds = {"+": "add", "-": "del"}
    out = [(kinds.get(line[:1], "ctx"), line) for line in lines[:DIFF_MAX_LINES]]
    if len(lines) > DIFF_MAX_LINES:
        out.append(("ctx", f"… {len(lines) - DIFF_MAX_LINES} more lines of diff not shown"))
    return tuple(out)


def _row(index: int, a: dict | None, b: dict | None, ia: int | None, ib: int | None) -> CellRow:
    if a is None or b is None:
        cell = b if a is None else a
        assert cell is not None
        return CellRow(index, ADDED if a is None else REMOVED, ia, ib, cell.get("cell_type", ""))
    source_changed = a.get("source", "") != b.get("source", "")
    outputs_changed = _outputs(a) != _outputs(b)
    return CellRow(
        index,
        CHANGED if source_changed or outputs_changed else UNCHANGED,
        ia,
        ib,
        b.get("cell_type", ""),
        source_changed,
        outputs_changed,
        _source_diff(a.get("source", ""), b.get("source", "")) if source_changed else (),
    )


def align_cells(nb_a: nbformat.NotebookNode, nb_b: nbformat.NotebookNode) -> list[CellRow]:
    """The cells of both notebooks in one sequence of rows, aligned as nbdime matches them
    (cells nbdime patches, rather than removes and adds, are one row). A matched cell is
    CHANGED when its source or its outputs (execution counts aside) differ; a change of
    metadata or cell id alone leaves it UNCHANGED."""
    cells_a, cells_b = nb_a.get("cells", []), nb_b.get("cells", [])
    ops: list[Any] = next(
        (entry["diff"] for entry in nbdime.diff_notebooks(nb_a, nb_b) if entry["key"] == "cells"),
        [],
    )
    rows: list[CellRow] = []
    i = j = 0

    def add(a: dict | None, b: dict | None) -> None:
        rows.append(
            _row(len(rows), a, b, i if a is not None else None, j if b is not None else None)
        )

    # nbdime's ops are sorted by their index in A; at one index an addrange comes first.
    for op in ops:
        while i < op["key"]:
            add(cells_a[i], cells_b[j])
            i, j = i + 1, j + 1
        if op["op"] == "addrange":
            for _ in op["valuelist"]:
                add(None, cells_b[j])
                j += 1
        elif op["op"] == "removerange":
            for _ in range(op["length"]):
                add(cells_a[i], None)
                i += 1
        else:  # "patch" (or "replace") of the cell at i
            add(cells_a[i], cells_b[j])
            i, j = i + 1, j + 1
    while i < len(cells_a) and j < len(cells_b):
        add(cells_a[i], cells_b[j])
        i, j = i + 1, j + 1
    return rows


def compare_runs(a: Run, b: Run) -> Comparison:
    """The comparison of runs ``a`` and ``b`` (the caller checked that the user may see
    both). Reads both output notebooks from storage; never raises for a missing one."""
    comparison = Comparison(
        a=a,
        b=b,
        parameters=parameter_rows(a, b),
        version_changed=a.version_id != b.version_id,
        values=value_rows(a, b),
        cells=None,
    )
    try:
        notebooks = load_output(a), load_output(b)
    except OutputUnavailable as exc:
        comparison.unavailable = str(exc)
        return comparison
    comparison.notebooks = notebooks
    comparison.cells = align_cells(*notebooks)
    return comparison


def last_success_before(run: Run) -> Run | None:
    """The latest SUCCEEDED run of ``run``'s job created before it, or None."""
    return (
        Run.objects.filter(job_id=run.job_id, state=Run.State.SUCCEEDED, pk__lt=run.pk)
        .order_by("-created_at", "-id")
        .first()
    )


# --- The side-by-side page -----------------------------------------------------------------


def comparison_stem(a_uuid: str, a_attempt: int, b_uuid: str, b_attempt: int) -> str:
    """The storage key, without its suffix, of the page comparing two runs' attempts: with
    run A's files, so that it goes where they go."""
    return f"runs/{a_uuid}/compare/{b_uuid}-{a_attempt}-{b_attempt}"


def is_current_comparison(key: str, a_id: int, a_attempt: int, b_id: int, b_attempt: int) -> bool:
    """Whether ``key`` is the stored page comparing runs ``a_id`` and ``b_id`` at those
    attempts, and both still have their output (a newer attempt, an expired output or a
    deleted run makes the page stale: the user-content origin no longer serves it)."""
    runs = {
        row["pk"]: row
        for row in Run.objects.filter(pk__in=[a_id, b_id], output_expired_at__isnull=True)
        .exclude(output_key="")
        .values("pk", "uuid", "attempt")
    }
    if a_id not in runs or b_id not in runs:
        return False
    if (runs[a_id]["attempt"], runs[b_id]["attempt"]) != (a_attempt, b_attempt):
        return False
    stem = comparison_stem(str(runs[a_id]["uuid"]), a_attempt, str(runs[b_id]["uuid"]), b_attempt)
    # The storage may have suffixed the name ("_abc1234") when two first views raced.
    return key == stem + ".html" or (
        key.startswith(stem + "_") and key.endswith(".html") and "/" not in key[len(stem) :]
    )


def _marked(cell: dict, **marks: Any) -> nbformat.NotebookNode:
    """A copy of ``cell`` whose ``metadata.portal_compare`` is ``marks`` (whatever the
    notebook stored under that name is replaced: the template trusts only ours)."""
    out = copy.deepcopy(cell)
    out.setdefault("metadata", {})["portal_compare"] = marks
    return nbformat.from_dict(out)


def _note(role: str, title: str, **marks: Any) -> nbformat.NotebookNode:
    return _marked(nbformat.v4.new_markdown_cell(""), role=role, title=title, **marks)


def comparison_notebook(comparison: Comparison) -> nbformat.NotebookNode:
    """One notebook of rows for the ``portal_compare`` template: per row a head (status,
    source diff), then A's cell and B's cell, or a note where a run has none."""
    assert comparison.notebooks is not None and comparison.cells is not None
    nb_a, nb_b = comparison.notebooks
    a, b = comparison.a, comparison.b
    cells = [
        _note("label", f"A: run #{a.pk} ({a.get_state_display()}, v{a.version.number})"),
        _note("label", f"B: run #{b.pk} ({b.get_state_display()}, v{b.version.number})"),
    ]
    for row in comparison.cells:
        where = " ↔ ".join(
            f"{side} cell {n + 1}"
            for side, n in (("A", row.a_index), ("B", row.b_index))
            if n is not None
        )
        what = [
            w for w, on in (("source", row.source_changed), ("outputs", row.outputs_changed)) if on
        ]
        title = f"{where}: {row.status}" + (f" ({', '.join(what)})" if what else "")
        cells.append(
            _note("head", title, status=row.status, row=row.index, diff=list(row.source_diff))
        )
        for side, nb, n, run in (("a", nb_a, row.a_index, a), ("b", nb_b, row.b_index, b)):
            if n is None:
                cells.append(_note("empty", f"(no such cell in run #{run.pk})"))
            else:
                cells.append(_marked(nb.cells[n], role=side))
    page = nbformat.v4.new_notebook(cells=cells)
    page.metadata = copy.deepcopy(nb_b.get("metadata", {}))  # the language, for highlighting
    return page


def stored_pages(run_uuid) -> list[str]:
    """Keys of the comparison pages stored with run ``run_uuid`` (those where it is A).
    A page where the run is B stays with the other run's files until they go; it is no
    longer served once this run's output is gone (``is_current_comparison``)."""
    prefix = f"runs/{run_uuid}/compare"
    try:
        _, names = default_storage.listdir(prefix)
    except FileNotFoundError:  # FileSystemStorage: none made yet (S3 answers an empty list)
        return []
    return [f"{prefix}/{name}" for name in names]


def delete_stored(run: Run) -> None:
    """Delete the comparison pages stored with ``run``. Storage errors are raised (the
    retention pass retries)."""
    for key in stored_pages(run.uuid):
        default_storage.delete(key)


def comparison_page_key(comparison: Comparison) -> str:
    """The storage key of the comparison's side-by-side page, rendered and stored on the
    first request (later ones reuse it; two first requests at once both render, and the
    storage keeps both files under suffixed names). Raises OutputUnavailable when the
    cells could not be compared."""
    if comparison.cells is None:
        raise OutputUnavailable(comparison.unavailable)
    a, b = comparison.a, comparison.b
    key = comparison_stem(str(a.uuid), a.attempt, str(b.uuid), b.attempt) + ".html"
    if default_storage.exists(key):
        return key
    title = f"Run #{a.pk} and run #{b.pk} of {a.job.name}"
    html = render.render_html(
        comparison_notebook(comparison), title=title, template="portal_compare"
    )
    return default_storage.save(key, ContentFile(html.encode("utf-8")))


# --- Plain data: the API, portalctl, manage.py -------------------------------------------------


def _side(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "state": run.state,
        "version": run.version.number,
        "created_at": run.created_at.isoformat() if run.created_at else None,
    }


def summary(comparison: Comparison) -> dict[str, Any]:
    """The comparison as JSON-able data (docs/api.md, "Compare two runs")."""
    a, b = comparison.a, comparison.b
    return {
        "a": _side(a),
        "b": _side(b),
        "job": {"id": a.job_id, "name": a.job.name} if a.job_id == b.job_id else None,
        "version_changed": comparison.version_changed,
        "parameters": [
            {
                "name": r.name,
                "a": r.a,
                "b": r.b,
                "in_a": r.in_a,
                "in_b": r.in_b,
                "changed": r.changed,
            }
            for r in comparison.parameters
        ],
        "values": [
            {"name": r.name, "a": r.a, "b": r.b, "changed": r.changed} for r in comparison.values
        ],
        "cells": None
        if comparison.cells is None
        else [
            {
                "index": r.index,
                "status": r.status,
                "a_index": r.a_index,
                "b_index": r.b_index,
                "cell_type": r.cell_type,
                "source_changed": r.source_changed,
                "outputs_changed": r.outputs_changed,
            }
            for r in comparison.cells
        ],
        "cells_unavailable": comparison.unavailable,
        "web_path": reverse("runs-compare", args=[a.pk, b.pk]),
    }
