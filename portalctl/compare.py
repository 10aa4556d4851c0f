"""The text summary of a run comparison (``GET /api/runs/{a}/compare/{b}/``), shared by
``portalctl runs compare`` and ``manage.py compareruns``: plain data in, lines out, no
Django and no network."""

import json
from typing import Any


def _value(row: dict[str, Any], side: str) -> str:
    if not row.get(f"in_{side}", True):
        return "(absent)"
    return json.dumps(row.get(side), ensure_ascii=False)


def format_comparison(data: dict[str, Any]) -> str:
    """A readable summary of the comparison ``data``: both runs, the notebook versions,
    the changed parameters and recorded values (``name: A → B``), and the cells that
    differ."""
    a, b = data["a"], data["b"]
    lines = [
        f"A: run #{a['id']} {a['state']} (notebook v{a['version']})",
        f"B: run #{b['id']} {b['state']} (notebook v{b['version']})",
        "notebook: " + ("versions differ" if data.get("version_changed") else "same version"),
    ]
    changed = [row for row in data.get("parameters", []) if row.get("changed")]
    if changed:
        lines.append(f"parameters: {len(changed)} changed")
        lines += [f"  {r['name']}: {_value(r, 'a')} → {_value(r, 'b')}" for r in changed]
    else:
        lines.append("parameters: the same")
    values = [row for row in data.get("values", []) if row.get("changed")]
    if values:
        lines.append(f"recorded values: {len(values)} changed")
        for row in values:
            a = "(absent)" if row.get("a") is None else row["a"]
            b = "(absent)" if row.get("b") is None else row["b"]
            lines.append(f"  {row['name']}: {a} → {b}")
    elif data.get("values"):
        lines.append("recorded values: the same")
    cells = data.get("cells")
    if cells is None:
        lines.append(f"cells: not compared: {data.get('cells_unavailable', '')}")
        return "\n".join(lines) + "\n"
    counts = {s: sum(1 for c in cells if c["status"] == s) for s in ("changed", "added", "removed")}
    unchanged = len(cells) - sum(counts.values())
    lines.append(
        f"cells: {counts['changed']} changed, {counts['added']} added, "
        f"{counts['removed']} removed, {unchanged} unchanged"
    )
    for cell in cells:
        if cell["status"] == "unchanged":
            continue
        where = " ↔ ".join(
            f"{side} {cell[f'{side.lower()}_index'] + 1}"
            for side in ("A", "B")
            if cell.get(f"{side.lower()}_index") is not None
        )
        what = [k for k in ("source", "outputs") if cell.get(f"{k}_changed")]
        lines.append(f"  {cell['status']:<8} {where}" + (f" ({', '.join(what)})" if what else ""))
    return "\n".join(lines) + "\n"
