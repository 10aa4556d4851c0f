"""Bytes on the wire for a large run's outputs, before and after their gzip copies.

Builds the executed notebook of issue 14: --charts Plotly charts (default 20) of --points
points each (default 60,000; a line of x = 0, 1, ... and a random walk y, as plain JSON
lists), written with nbformat as papermill writes it, and renders it through
``jobs.render.render_html`` (about 26 MB of HTML). Then it measures

- the gzip copies as the run's end stores them (``jobs.compression.store_gzip_copy``, in
  the file storage of a throw-away data directory): seconds and bytes, for the HTML and
  the .ipynb, at the portal's level (``GZIP_LEVEL``);
- the same compression at each of --levels (size and seconds, median of --runs), which is
  how the level was chosen;
- the standalone HTML download (``render.standalone_chunks``), plain and gzipped while it
  streams at ``STREAM_LEVEL`` (``compression.gzip_chunks``): what a download costs the web
  process.

"Before" is what was sent before (every file as it is), "after" what a browser that
accepts gzip is sent now (the views send the stored copy byte for byte: the tests check
its Content-Length). Prints figures; asserts nothing. Needs no service (no database,
Redis or sandbox).

    .venv/bin/python bench/output_compression.py [--runs 3] [--charts 20] [--points 60000]
                                                 [--levels 1,3,6,9]
"""

import gzip
import io
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

MB = 1024 * 1024  # figures are printed in MiB


def setup() -> None:
    """Django with the portal's settings and a throw-away data directory (its storage is
    used; the database is never opened)."""
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    data = tempfile.mkdtemp(prefix="bench-compression-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_DATA_DIR=data,
        DATABASE_URL=f"sqlite:///{data}/unused.sqlite3",
        REDIS_URL=f"unix://{data}/unused.sock",
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()


def chart_notebook(charts: int, points: int, seed: int = 14) -> bytes:
    """The executed notebook, as nbformat writes it: one code cell per chart, each with
    the ``application/vnd.plotly.v1+json`` output the kernel's plotly_mimetype renderer
    stores (plotly's own JSON of a ``go.Figure``)."""
    import nbformat
    import plotly.graph_objects as go
    import plotly.io as pio

    rnd = random.Random(seed)
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import plotly.graph_objects as go"))
    for i in range(charts):
        walk, y = 0.0, []
        for _ in range(points):
            walk += rnd.gauss(0, 1)
            y.append(round(walk * 1000, 8))
        figure = go.Figure(
            go.Scattergl(x=list(range(points)), y=y, mode="lines", name=f"series {i}"),
            layout={"title": {"text": f"Chart {i}"}, "height": 400},
        )
        cell = nbformat.v4.new_code_cell(f"fig = chart({i})\nfig.show()", execution_count=i + 2)
        cell.outputs = [
            nbformat.v4.new_output(
                "display_data",
                data={
                    "application/vnd.plotly.v1+json": json.loads(pio.to_json(figure)),
                    "text/plain": [f"Figure({i})"],
                },
            )
        ]
        nb.cells.append(cell)
    return nbformat.writes(nb).encode()


def timed(fn, runs: int):
    """``(median seconds, every run, the last result)`` of ``fn()`` over ``runs`` runs."""
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return _env.median(seconds), seconds, result


def line(label: str, before: int, after: int, note: str = "") -> None:
    print(
        f"  {label:<34} {before / MB:8.2f} MiB -> {after / MB:7.2f} MiB "
        f"({after / before:.0%} of it, {before / after:.2f}x smaller){note}"
    )


def main() -> None:
    p = _env.parser(__doc__.splitlines()[0])
    p.add_argument("--charts", type=int, default=20, help="Plotly charts (default 20)")
    p.add_argument("--points", type=int, default=60_000, help="points per chart (default 60000)")
    p.add_argument("--levels", default="1,3,6,9", help="gzip levels compared (default 1,3,6,9)")
    args = p.parse_args()
    setup()
    import nbformat
    from django.core.files.storage import default_storage

    from jobs import compression, render

    print(f"machine: {_env.machine()}")
    ipynb = chart_notebook(args.charts, args.points)
    started = time.perf_counter()
    html = render.render_html(nbformat.reads(ipynb, as_version=4), title="charts").encode()
    render_seconds = time.perf_counter() - started
    print(
        f"notebook: {args.charts} charts x {args.points:,} points; "
        f".ipynb {len(ipynb) / MB:.2f} MiB, HTML {len(html) / MB:.2f} MiB "
        f"(render_html {render_seconds:.2f} s)"
    )

    # What the run's end does, into real storage (the throw-away data directory's).
    print(
        f"\nstored copies at the portal's level {compression.GZIP_LEVEL} (median of {args.runs}):"
    )
    copies = {}
    for name, data in (("output.html", html), ("output.ipynb", ipynb)):

        def store(name=name, data=data):
            return compression.store_gzip_copy(f"bench/{name}", io.BytesIO(data))

        median, runs, (key, size) = timed(store, args.runs)
        assert gzip.decompress(default_storage.open(key).read()) == data  # a true copy
        copies[name] = size
        print(f"  {name:<13} {median:.2f} s ({_env.fmt_runs(runs)})  {size / MB:.2f} MiB")

    print("\nbytes on the wire, before -> after (a browser that accepts gzip):")
    line("frame (the viewer's HTML)", len(html), copies["output.html"])
    line(".ipynb download", len(ipynb), copies["output.ipynb"])
    standalone = b"".join(render.standalone_chunks(io.BytesIO(html)))
    median, runs, packed = timed(
        lambda: b"".join(compression.gzip_chunks(render.standalone_chunks(io.BytesIO(html)))),
        args.runs,
    )
    line(
        ".html download (plotly.js inlined)",
        len(standalone),
        len(packed),
        f"; gzip while sending, level {compression.STREAM_LEVEL}: {median:.2f} s "
        f"({_env.fmt_runs(runs)})",
    )
    total_before = len(html) + len(ipynb)
    line("frame + .ipynb", total_before, copies["output.html"] + copies["output.ipynb"])
    stored_extra = copies["output.html"] + copies["output.ipynb"]
    share = stored_extra / total_before
    print(f"  storage added by the copies: {stored_extra / MB:.2f} MiB ({share:.0%})")

    print(f"\nthe levels (gzip.compress, median of {args.runs}; gunzip is the browser's side):")
    for level in (int(v) for v in args.levels.split(",")):
        cells = []
        for name, data in (("HTML", html), (".ipynb", ipynb)):
            median, _, out = timed(
                lambda data=data, level=level: gzip.compress(data, level, mtime=0), args.runs
            )
            unzip, _, _ = timed(lambda out=out: gzip.decompress(out), 1)
            cells.append(
                f"{name} {len(out) / MB:6.2f} MiB in {median:5.2f} s (gunzip {unzip:.2f} s)"
            )
        print(f"  level {level}: " + "; ".join(cells))
    print(f"machine after: {_env.machine()}")


if __name__ == "__main__":
    main()
