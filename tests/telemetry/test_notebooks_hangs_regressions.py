"""The example notebooks examples/hangs_by_last_frame.ipynb and (run with its defaults, as the
quick start schedules it) examples/telemetry_hello_world.ipynb (examples/regression_detection.ipynb:
test_notebooks_regression_detection.py).

Each notebook is executed once per module, exactly as the portal runs it (``jobs.executor``:
papermill in the portal kernel, with the kernel environment of ``jobs.kernel``), on a small
generated sample: 10,000 pings over 4 days, in a temporary
directory that the kernel's sandbox reads and sees as its ``TELEMETRY_DATA_ROOT``. The tests
then read the executed notebooks' outputs and check the printed numbers against the data
itself.
"""

import datetime as dt
import json
import re
import time
from collections import Counter
from pathlib import Path

import nbformat
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import telemetry
import telemetry.sample
from jobs.notebooks import inspect_parameters
from recorded.extract import read_notebook_values
from tests import sandboxes

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples"
HANGS = EXAMPLES / "hangs_by_last_frame.ipynb"
PINGS = 10_000
DAYS = 4
END = "20261115"
# The hangs notebook reads the last three of the four days (two date formats on purpose).
HANGS_PARAMETERS = {"start_date": "2026-11-13", "end_date": "20261115"}
PLOTLY = "application/vnd.plotly.v1+json"


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    """Pings, as ``telemetry.sample`` lays them out."""
    base = sandboxes.shared_dir("notebooks")
    telemetry.sample.generate(base / "pings", pings=PINGS, days=DAYS, end_date=END)
    return base


def execute(notebook: Path, sample: Path, parameters: dict) -> dict:
    """Run ``notebook`` through the portal's executor; return the outcome, the executed
    notebook, its stdout and the wall time."""
    out_dir = sample / f"run-{notebook.stem}"
    out_dir.mkdir()
    output = out_dir / "output.ipynb"
    started = time.monotonic()
    outcome = sandboxes.execute(
        notebook,
        output,
        parameters,
        read_only=[sample],
        timeout=600,
        env={"TELEMETRY_DATA_ROOT": str(sample / "pings")},
    )
    elapsed = time.monotonic() - started
    nb = nbformat.read(str(outcome.output_path), as_version=4) if outcome.output_path else None
    stdout = ""
    if nb is not None:
        stdout = "".join(
            o.get("text", "")
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "stream" and o.get("name") == "stdout"
        )
    print(f"{notebook.name}: {outcome.status} in {elapsed:.1f} s")
    return {"outcome": outcome, "nb": nb, "stdout": stdout, "elapsed": elapsed}


@pytest.fixture(scope="module")
def hangs_run(sample):
    return execute(HANGS, sample, HANGS_PARAMETERS)


def value(stdout: str, name: str) -> float:
    """The number printed as ``name=<number>`` on a line of its own."""
    match = re.search(rf"^{re.escape(name)}=(\S+)$", stdout, re.M)
    assert match, f"{name}=... not printed; stdout:\n{stdout[-3000:]}"
    return float(match.group(1))


def results_of(run) -> dict:
    """The ``results`` dictionary that the notebook's last cell prints as JSON."""
    last = [c for c in run["nb"].cells if c.cell_type == "code"][-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    return json.loads(text)


def plotly_outputs(nb) -> list:
    return [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if PLOTLY in o.get("data", {})
    ]


def assert_succeeded(run):
    outcome = run["outcome"]
    assert outcome.status == "succeeded", (
        f"{outcome.status}: {outcome.message}\n{outcome.error.get('traceback', '')}"
    )


# --- the notebooks as files ------------------------------------------------------------------


@pytest.mark.parametrize("path", [HANGS], ids=lambda p: p.stem)
def test_notebooks_are_clean_v4_with_typed_parameters(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "no stored outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = inspect_parameters(nb)
    if path == HANGS:
        assert {n: p["type"] for n, p in params.items()} == {
            "data_path": "str",
            "app": "str",
            "channel": "str",
            "start_date": "str",
            "end_date": "str",
            "fraction": "float",
            "top_n": "int",
            "plugin_marker": "str",
            "session_bins_minutes": "list",
            "shuffle_partitions": "int",
        }
        assert params["top_n"]["default"] == 10 and params["data_path"]["default"] == ""
    assert all(p["help"] for p in params.values()), "every parameter has a comment"


# --- hangs by last frame ---------------------------------------------------------------------


def expected_hangs(sample: Path) -> dict:
    """What the hangs notebook should find, computed with pyarrow and plain Python."""
    partitioning = ds.partitioning(
        pa.schema([(c, pa.string()) for c in telemetry.PARTITION_COLUMNS]), flavor="hive"
    )
    dataset = ds.dataset(sample / "pings", format="parquet", partitioning=partitioning)
    first = dt.date.fromisoformat(HANGS_PARAMETERS["start_date"]).strftime("%Y%m%d")
    table = dataset.to_table(
        columns=["hangs", "session_length_s"],
        filter=(ds.field("submission_date") >= first)
        & (ds.field("submission_date") <= HANGS_PARAMETERS["end_date"])
        & (ds.field("app") == "Firefox"),  # the notebook's default app, as the document's
    )
    hangs = [h for ping in table["hangs"].to_pylist() for h in ping]
    frames = Counter(h["stack"][-1] for h in hangs)
    plugin = [any("Plugin" in f for f in h["stack"]) for h in hangs]
    durations = np.array([h["duration_ms"] for h in hangs], dtype=float)
    plugin = np.array(plugin)
    return {
        "pings": table.num_rows,
        "hangs": len(hangs),
        "frames": sorted(frames.items(), key=lambda kv: (-kv[1], kv[0])),
        "plugin_share": plugin.mean(),
        "median_plugin": float(np.median(durations[plugin])),
        "median_other": float(np.median(durations[~plugin])),
    }


@pytest.mark.slow
@pytest.mark.sandbox
def test_hangs_notebook_runs_in_the_portal_kernel(hangs_run):
    assert_succeeded(hangs_run)
    nb = hangs_run["nb"]
    # The portal injected the parameters after the parameters cell.
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'start_date = "2026-11-13"' in injected[0].source
    charts = plotly_outputs(nb)
    assert len(charts) == 3  # top frames, durations, hangs per session
    assert all(chart["data"][PLOTLY]["data"] for chart in charts)
    assert hangs_run["elapsed"] < 300


@pytest.mark.slow
@pytest.mark.sandbox
def test_hangs_numbers_match_the_data(hangs_run, sample):
    assert_succeeded(hangs_run)
    out = hangs_run["stdout"]
    want = expected_hangs(sample)
    assert value(out, "pings") == want["pings"] and value(out, "hangs") == want["hangs"]

    top = re.findall(r"^top_frame_(\d+)=(.+) share=([0-9.]+)$", out, re.M)
    assert len(top) == 10
    frames = [frame for _, frame, _ in top]
    assert "PresShell::DoReflow" in frames or "nsCycleCollector::collectSlice" in frames
    assert frames == [frame for frame, _ in want["frames"][:10]]
    for (_, _frame, share), (_, count) in zip(top, want["frames"][:10], strict=True):
        assert float(share) == pytest.approx(count / want["hangs"], abs=1e-4)

    plugin_share = value(out, "plugin_share")
    assert 0 < plugin_share < 1
    assert plugin_share == pytest.approx(want["plugin_share"], abs=1e-4)
    plugin_ms, other_ms = (
        value(out, "median_duration_plugin_ms"),
        value(out, "median_duration_nonplugin_ms"),
    )
    assert plugin_ms > 0 and other_ms > 0
    assert plugin_ms == pytest.approx(want["median_plugin"]) and other_ms == pytest.approx(
        want["median_other"]
    )
    # Plugin and other hangs share one duration distribution (test_hangs_notebook_document).

    results = results_of(hangs_run)
    assert results["pings"] == want["pings"] and results["hangs"] == want["hangs"]
    assert [f["frame"] for f in results["top_frames"]] == frames
    assert results["plugin_share"] == pytest.approx(plugin_share, abs=1e-4)
    assert results["median_duration_ms"] == {"plugin": plugin_ms, "nonplugin": other_ms}
    bins = results["hangs_per_session_by_length"]
    assert sum(b["sessions"] for b in bins) == want["pings"]
    # Hangs are a rate per hour of session: longer sessions report more of them.
    assert bins[-1]["hangs_per_session"] > bins[0]["hangs_per_session"]
    assert results["corr_log_session_length_hangs"] > 0


@pytest.mark.slow
@pytest.mark.sandbox
def test_hello_world_runs_with_its_defaults(sample):
    """The quick start schedules examples/telemetry_hello_world.ipynb with its defaults
    (``data_path = ""``: the kernel's TELEMETRY_DATA_ROOT); its first run must succeed
    and draw the OS chart."""
    run = execute(EXAMPLES / "telemetry_hello_world.ipynb", sample, {})
    outcome = run["outcome"]
    assert outcome.status == "succeeded", (outcome.message, run["stdout"][-2000:])
    figures = [
        o
        for c in run["nb"].cells
        if c.cell_type == "code"
        for o in c.outputs
        if PLOTLY in o.get("data", {})
    ]
    assert figures, "no Plotly figure in the output"
    # Its headline figures are recorded (scrapbook's glue): pings per OS, total, table.
    recorded = {v.name: v for v in read_notebook_values(run["nb"]).values}
    per_os = {n: v.number for n, v in recorded.items() if n.startswith("pings_") and v.number}
    total = per_os.pop("pings_total")
    table = recorded["pings_per_os"]
    assert table.kind == "table" and len(table.data["rows"]) == len(per_os) > 1
    assert 0 < sum(per_os.values()) <= total
