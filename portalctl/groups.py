"""Backfills and sweeps as text, shared by ``portalctl jobs backfill|sweep``, ``portalctl
groups ...`` and ``manage.py backfill|sweep``: plain data in, plain data out, no Django and
no network.

Parameter values on the command line are ``NAME=VALUE``. A sweep's VALUE is a list: a JSON
list (``x='[1, 2, 3]'``, the way to give values holding commas, or lists), else the text
split on commas (``x=1,2,3``). Each value is read as JSON where it parses (``1``, ``0.5``,
``true``, ``[1, 2]``), else kept as text; a parameter the notebook declares as text or as a
date keeps the text as typed (``label=1`` is the text "1"), as ``manage.py runnotebook``
does.
"""

import json
from collections.abc import Container
from typing import Any

#: Declared parameter types whose values stay the text typed (jobs.notebooks.PARAMETER_TYPES).
TEXT_TYPES = frozenset({"str", "date"})


def split_assignment(text: str) -> tuple[str, str]:
    """``"NAME=VALUE"`` as ``(NAME, VALUE)``; raises ValueError without a ``=`` or a NAME."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"{text!r}: give NAME=VALUE")
    return name.strip(), value


def json_or_text(text: str) -> Any:
    """``text`` as the JSON value it spells, else as itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def sweep_values(text: str, *, as_text: bool = False) -> list[Any]:
    """A sweep's values from the VALUE of ``NAME=VALUE``: a JSON list as its items, else
    the text split on commas, each item read as JSON where it parses (``as_text``: kept as
    typed, for a text or date parameter). Raises ValueError for no value at all."""
    stripped = text.strip()
    parsed = json_or_text(stripped) if stripped.startswith("[") else None
    if isinstance(parsed, list):
        items = [
            item if not as_text or isinstance(item, str) else json.dumps(item) for item in parsed
        ]
    else:
        items = [part.strip() for part in text.split(",")]
        if not as_text:
            items = [json_or_text(item) for item in items]
    if not items or items == [""]:
        raise ValueError("give at least one value")
    return items


def parse_axes(assignments: list[str], text_names: Container[str] = ()) -> dict[str, list[Any]]:
    """``["x=1,2", "ratio=0.1,0.9"]`` as ``{"x": [1, 2], "ratio": [0.1, 0.9]}`` (in the
    order given), the values of ``text_names`` kept as text. Raises ValueError naming the
    assignment at fault, or a parameter given twice."""
    axes: dict[str, list[Any]] = {}
    for assignment in assignments:
        name, value = split_assignment(assignment)
        if name in axes:
            raise ValueError(f"{name} is given twice: give all its values at once")
        try:
            axes[name] = sweep_values(value, as_text=name in text_names)
        except ValueError as exc:
            raise ValueError(f"{assignment!r}: {exc}") from None
    return axes


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """``["day=2026-10-24", "n=3"]`` as ``{"day": "2026-10-24", "n": "3"}``: values as typed,
    which the portal converts to each parameter's type (as for ``portalctl run -p``)."""
    return dict(split_assignment(a) for a in assignments)


def text_parameters(versions: list[dict[str, Any]]) -> set[str]:
    """The names the newest of ``versions`` (the API's ``GET /api/jobs/{id}/versions/``)
    declares as text or dates."""
    if not versions:
        return set()
    newest = max(versions, key=lambda v: v.get("number") or 0)
    schema = newest.get("parameter_schema") or {}
    return {name for name, spec in schema.items() if (spec or {}).get("type") in TEXT_TYPES}


def progress_line(group: dict[str, Any]) -> str:
    """One line about a group (the API's JSON): ``3 of 5 done: 2 succeeded, 1 failed; 1
    running, 1 queued``, counting each slot or combination by its newest run."""
    p = group.get("progress") or {}
    ended = [f"{p.get(key)} {key}" for key in ("succeeded", "failed", "cancelled") if p.get(key)]
    active = [f"{p.get(key)} {key}" for key in ("running", "queued") if p.get(key)]
    line = f"{p.get('done', 0)} of {p.get('total', 0)} done"
    if ended:
        line += ": " + ", ".join(ended)
    if active:
        line += "; " + ", ".join(active)
    return line


def is_active(group: dict[str, Any]) -> bool:
    """Whether any of the group's items has a queued or running newest run."""
    p = group.get("progress") or {}
    return bool(p.get("running") or p.get("queued"))


def headline(group: dict[str, Any]) -> str:
    """``backfill 12 of job 7: 3 of 5 done: ...``."""
    return (
        f"{group.get('kind')} {group.get('id')} of job {group.get('job')}: {progress_line(group)}"
    )


def run_rows(group: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The group's runs (the newest of each item) as table rows, and their columns: a
    backfill's by slot, a sweep's with one column per swept parameter."""
    runs = group.get("runs") or []
    if group.get("kind") == "sweep":
        names = list(group.get("parameters") or {})
        rows = [
            {
                "id": r.get("id"),
                "state": r.get("state"),
                **{n: json.dumps((r.get("parameters") or {}).get(n)) for n in names},
            }
            for r in runs
        ]
        return rows, ["id", "state", *names]
    rows = [
        {
            "id": r.get("id"),
            "state": r.get("state"),
            "slot": r.get("logical_date"),
            "trigger": r.get("trigger"),
        }
        for r in runs
    ]
    return rows, ["id", "state", "slot", "trigger"]


def list_rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups (the API's JSON) as rows of ``portalctl groups list``."""
    return [{**g, "progress": progress_line(g)} for g in groups]
