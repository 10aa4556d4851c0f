"""Validation time of a large uploaded notebook, through the job form's own field.

Builds an executed notebook of about --megabytes MB (default 18.7, the notebook of issue
10): --cells code cells, each with the outputs a real analysis notebook has, a printed
table (a stream), a Plotly figure (its ``application/vnd.plotly.v1+json`` data, 3 traces
with x, y and [count, label] hover pairs per point, and the ``text/html`` div that draws
it) and a PNG. Then each measured
repetition times

- form: ``InspectForm`` bound to the file as an upload, ``is_valid()``. This is what the
  new-job page and the inspect endpoint do with a notebook: ``NotebookField.clean`` reads
  and validates it (``notebooks.read_notebook``) and the parameters are read from it;
- refused: the same, for the notebook with one schema error in a cell's metadata;
- create: what creating a job costs in notebook work, from the uploaded file to the
  arguments of the service (the form's ``NotebookField`` and the parameters it reads,
  then what ``services.create_job`` does with the notebook before it writes anything).
  Before the change the service parsed the file a second time; now it takes the parsed
  notebook. Nothing is written: the database is not needed.

Prints the median of --runs and every run, the size of the notebook and of what is
stored, and the target (form <= 2 s). Needs no service (no database, Redis or sandbox).

    .venv/bin/python bench/notebook_validation.py [--runs 3] [--megabytes 18.7] [--cells 60]
"""

import base64
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402

TARGET = 2.0


def setup() -> None:
    """Django with the portal's settings and a throw-away data directory (never opened)."""
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    data = tempfile.mkdtemp(prefix="bench-validation-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_DATA_DIR=data,
        DATABASE_URL=f"sqlite:///{data}/unused.sqlite3",
        REDIS_URL=f"unix://{data}/unused.sock",
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()


def _lines(text: str) -> list[str]:
    """``text`` as nbformat stores multi-line strings on disk: a list of lines."""
    return text.splitlines(keepends=True)


def executed_notebook(target_bytes: int, cells: int, seed: int = 7) -> bytes:
    """An executed notebook of about ``target_bytes`` bytes (JSON as Jupyter writes it):
    a parameters cell, then ``cells`` code cells with a stream, a Plotly figure and a PNG
    each; the figures' point count grows until the size is reached."""
    rnd = random.Random(seed)
    png = base64.b64encode(rnd.randbytes(12_000)).decode()

    def build(points: int) -> dict:
        nb_cells: list[dict] = [
            {
                "cell_type": "code",
                "execution_count": 1,
                "id": "params",
                "metadata": {"tags": ["parameters"]},
                "outputs": [],
                "source": _lines('channel = "release"\nsample_fraction = 0.01\ntop_n = 10\n'),
            }
        ]
        for i in range(cells):
            xs = [round(rnd.random() * 100, 2) for _ in range(points)]
            hover = [[rnd.randrange(1000), rnd.choice("ABC")] for _ in range(points)]
            figure = {
                "data": [
                    {
                        "type": "scatter",
                        "name": f"trace {t}",
                        "x": xs,
                        "y": xs[::-1],
                        "customdata": hover,
                        "hovertemplate": "%{customdata[0]} %{customdata[1]}<extra></extra>",
                    }
                    for t in range(3)
                ],
                "layout": {"title": {"text": f"Figure {i}"}, "height": 400},
            }
            div = (
                f'<div id="fig-{i}" class="plotly-graph-div"></div>\n'
                f'<script type="text/javascript">\nPlotly.newPlot("fig-{i}", '
                + json.dumps(figure["data"])
                + ");\n</script>\n"
            )
            table = "".join(
                f"{r:>6} {rnd.choice(['Windows', 'Linux', 'Darwin']):<8} {rnd.random():.6f}\n"
                for r in range(200)
            )
            nb_cells.append(
                {
                    "cell_type": "code",
                    "execution_count": i + 2,
                    "id": f"cell-{i}",
                    "metadata": {},
                    "source": _lines(
                        f"df_{i} = pings.groupby('os').size()\nprint(df_{i})\n"
                        f"fig = px.scatter(df_{i})\nfig.show()\n"
                    ),
                    "outputs": [
                        {"output_type": "stream", "name": "stdout", "text": _lines(table)},
                        {
                            "output_type": "display_data",
                            "metadata": {},
                            "data": {
                                "application/vnd.plotly.v1+json": figure,
                                "text/html": _lines(div),
                                "text/plain": [f"Figure({i})"],
                            },
                        },
                        {
                            "output_type": "display_data",
                            "metadata": {},
                            "data": {"image/png": png, "text/plain": ["<Figure>"]},
                        },
                    ],
                }
            )
        return {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python", "version": "3.11.7"},
            },
            "cells": nb_cells,
        }

    def dump(nb: dict) -> bytes:
        return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"

    points = 100
    data = dump(build(points))
    for _ in range(20):  # the size is about linear in the points: a few steps reach it
        if abs(len(data) - target_bytes) < target_bytes * 0.01:
            break
        fixed = len(dump(build(1)))
        points = max(1, round((points - 1) * (target_bytes - fixed) / (len(data) - fixed)) + 1)
        data = dump(build(points))
    return data


def time_form(data: bytes) -> float:
    """Seconds for InspectForm(file).is_valid(), as the inspect endpoint runs it."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from jobs.forms import InspectForm

    upload = SimpleUploadedFile("big.ipynb", data, content_type="application/x-ipynb+json")
    started = time.perf_counter()
    form = InspectForm(data={}, files={"notebook": upload})
    valid = form.is_valid()
    elapsed = time.perf_counter() - started
    if not valid:
        raise SystemExit(f"the notebook was refused: {form.errors.as_text()}")
    return elapsed


def time_refused(data: bytes) -> float:
    """Seconds for InspectForm.is_valid() on the same notebook with one schema error in a
    cell's metadata (tags not a list): nbformat then validates again with jsonschema, for
    its message."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from jobs.forms import InspectForm

    upload = SimpleUploadedFile("bad.ipynb", data, content_type="application/x-ipynb+json")
    started = time.perf_counter()
    form = InspectForm(data={}, files={"notebook": upload})
    valid = form.is_valid()
    elapsed = time.perf_counter() - started
    if valid:
        raise SystemExit("the broken notebook was accepted")
    return elapsed


def time_create(data: bytes) -> tuple[float, int]:
    """Seconds of the notebook work of a job creation (form, then the service's own reading
    of what it was given), and the bytes that would be stored."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from jobs import notebooks
    from jobs.forms import NotebookField

    upload = SimpleUploadedFile("big.ipynb", data, content_type="application/x-ipynb+json")
    started = time.perf_counter()
    cleaned = NotebookField().clean(upload)
    notebooks.inspect_parameters(cleaned.parsed.nb)  # JobForm.clean_notebook
    parsed = getattr(notebooks, "as_parsed", None)
    if parsed is not None:  # the service takes the parsed notebook as it is
        stored = parsed(cleaned.parsed)
        schema = stored.parameter_schema
        size = len(stored.data)
    else:  # before: the service read the bytes again, and stored them as uploaded
        stored = notebooks.read_notebook(data)
        schema = notebooks.inspect_parameters(stored.nb)
        size = len(data)
    elapsed = time.perf_counter() - started
    assert "top_n" in schema
    return elapsed, size


def main() -> None:
    p = _env.parser(__doc__.splitlines()[0])
    p.add_argument("--megabytes", type=float, default=18.7, help="notebook size (default 18.7)")
    p.add_argument("--cells", type=int, default=60, help="code cells with outputs (default 60)")
    args = p.parse_args()
    setup()
    data = executed_notebook(int(args.megabytes * 1024 * 1024), args.cells)
    print(f"notebook: {len(data) / 1048576:.1f} MB, {args.cells} code cells with outputs")
    print(f"machine: {_env.machine()}")
    time_form(data)  # warm-up: imports, compiled schemas
    nb = json.loads(data)
    nb["cells"][-1]["metadata"]["tags"] = "not a list"
    broken = json.dumps(nb, indent=1, sort_keys=True).encode()
    forms, creates, refusals, stored = [], [], [], 0
    for _ in range(args.runs):
        forms.append(time_form(data))
        seconds, stored = time_create(data)
        creates.append(seconds)
        refusals.append(time_refused(broken))
    form = _env.median(forms)
    verdict = "met" if form <= TARGET else "missed"
    print(f"form (InspectForm.is_valid): {form:.2f} s ({_env.fmt_runs(forms)})")
    print(f"  target <= {TARGET:.0f} s: {verdict}")
    print(
        f"create (form + service, notebook work): {_env.median(creates):.2f} s "
        f"({_env.fmt_runs(creates)})"
    )
    print(
        f"refused (one bad cell metadata): {_env.median(refusals):.2f} s "
        f"({_env.fmt_runs(refusals)})"
    )
    print(f"stored notebook file: {stored / 1048576:.2f} MB")


if __name__ == "__main__":
    main()
