"""The example notebook examples/regression_detection.ipynb, run once per module exactly as
the portal runs it (``jobs.executor``: papermill in the portal kernel, in a sandbox), on the
default Talos series (``generate_talos`` at its defaults, in a directory the sandbox reads and
whose ``pings`` sibling is its ``TELEMETRY_DATA_ROOT``).

The notebook compares a Gaussian-mixture detector (K by BIC, rolling-window z-test) with a
single-Gaussian one; the tests check the figures it records (scrapbook's glue) against the
claim it tests, and recompute them from its alert list and the generator's ground truth.
"""

import json
import re
from pathlib import Path

import nbformat
import pytest

import telemetry.sample
from jobs.notebooks import inspect_parameters
from recorded.extract import read_notebook_values
from tests import sandboxes

NOTEBOOK = Path(__file__).resolve().parent.parent.parent / "examples" / "regression_detection.ipynb"
RECORDED = (
    "precision",
    "recall",
    "alerts",
    "true_alerts",
    "shifts",
    "recall_2sd",
    "max_alerts_per_shift",
    "mixture_false_alerts_bimodal",
    "single_false_alerts_bimodal",
    "single_precision",
    "single_recall",
    "single_recall_2sd",
)
TOLERANCE = 3  # the notebook's default tolerance_runs
WINDOW = 12  # its default window_runs
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def talos():
    base = sandboxes.shared_dir("regressions")
    telemetry.sample.generate_talos(base / "talos")  # the defaults the notebook's prose reports
    (base / "pings").mkdir()
    return base


@pytest.fixture(scope="module")
def run(talos):
    out_dir = talos / "run"
    out_dir.mkdir()
    outcome = sandboxes.execute(
        NOTEBOOK,
        out_dir / "output.ipynb",
        {},
        read_only=[talos],
        timeout=600,
        env={"TELEMETRY_DATA_ROOT": str(talos / "pings")},
    )
    nb = nbformat.read(str(outcome.output_path), as_version=4) if outcome.output_path else None
    stdout = "".join(
        o.get("text", "")
        for c in (nb.cells if nb else [])
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream" and o.get("name") == "stdout"
    )
    return {"outcome": outcome, "nb": nb, "stdout": stdout}


def assert_succeeded(run):
    outcome = run["outcome"]
    assert outcome.status == "succeeded", (
        f"{outcome.status}: {outcome.message}\n{outcome.error.get('traceback', '')}"
    )


def value(stdout: str, name: str) -> float:
    """The number printed as ``name=<number>`` on a line of its own."""
    match = re.search(rf"^{re.escape(name)}=(\S+)$", stdout, re.M)
    assert match, f"{name}=... not printed; stdout:\n{stdout[-3000:]}"
    return float(match.group(1))


def results_of(run) -> dict:
    """The ``results`` dictionary that the notebook's last cell prints as JSON."""
    last = [c for c in run["nb"].cells if c.cell_type == "code"][-1]
    return json.loads("".join(o.get("text", "") for o in last.outputs if o.output_type == "stream"))


def plotly_outputs(nb) -> list:
    return [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if PLOTLY in o.get("data", {})
    ]


def test_notebook_is_clean_v4_with_typed_parameters():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "no stored outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert len([c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]) == 1
    params = inspect_parameters(nb)
    assert {n: p["type"] for n, p in params.items()} == {
        "talos_path": "str",
        "window_runs": "int",
        "max_components": "int",
        "z_threshold": "float",
        "tolerance_runs": "int",
        "plot_series": "int",
    }
    assert params["window_runs"]["default"] == WINDOW
    assert params["tolerance_runs"]["default"] == TOLERANCE
    assert all(p["help"] for p in params.values()), "every parameter has a comment"


@pytest.mark.slow
@pytest.mark.sandbox
def test_mixture_detector_earns_the_claim(run, talos):
    assert_succeeded(run)
    results = results_of(run)
    # Recorded with the run, as the portal reads them back.
    recorded = {v.name: v for v in read_notebook_values(run["nb"]).values}
    assert all(recorded[name].number is not None for name in RECORDED)
    figures: dict[str, float] = {name: recorded[name].number or 0.0 for name in RECORDED}
    assert figures == {name: pytest.approx(results[name]) for name in RECORDED}
    assert recorded["detectors_by_pattern"].kind == "table"
    assert value(run["stdout"], "precision") == pytest.approx(results["precision"], abs=1e-4)
    assert value(run["stdout"], "recall") == pytest.approx(results["recall"], abs=1e-4)

    # The claim: on bimodal series the mixture raises at least 50 % fewer false alerts than
    # a single Gaussian, one alert per shift at most, recall >= 0.8 on shifts of 2 SD or more.
    single, mixture = (
        figures["single_false_alerts_bimodal"],
        figures["mixture_false_alerts_bimodal"],
    )
    assert single > 0 and mixture <= 0.5 * single, (mixture, single)
    assert figures["max_alerts_per_shift"] <= 1
    assert figures["recall_2sd"] >= 0.8

    # The same figures, recomputed from the alert list and the generator's ground truth.
    shifts = json.loads((talos / "talos" / "_shifts.json").read_text())
    series = json.loads((talos / "talos" / "_series.json").read_text())
    pattern = {(s["test"], s["platform"]): s["pattern"] for s in series}
    assert results["series"] == len(series) == 240 and results["shifts"] == len(shifts)
    alerts: dict[str, dict[tuple[str, str], list[dict]]] = {"mixture": {}, "single": {}}
    for a in results["alert_list"]:
        alerts[a["detector"]].setdefault((a["test"], a["platform"]), []).append(a)
    for detector, by_series in alerts.items():
        for key, found in by_series.items():
            for a in found:  # matched: a shift of its series within the tolerance
                same = [s for s in shifts if (s["test"], s["platform"]) == key]
                assert a["matched"] == any(abs(s["push"] - a["push"]) <= TOLERANCE for s in same)
        false_bimodal = sum(
            not a["matched"]
            for k, found in by_series.items()
            if pattern[k] == "bimodal"
            for a in found
        )
        assert false_bimodal == figures[f"{detector}_false_alerts_bimodal"]
    near: list[list[dict]] = []  # per shift: the mixture's alerts around it
    detected: list[bool] = []  # per shift: found or not
    for s in shifts:
        here = alerts["mixture"].get((s["test"], s["platform"]), [])
        near.append([a for a in here if s["push"] - TOLERANCE <= a["push"] < s["push"] + WINDOW])
        detected.append(any(abs(a["push"] - s["push"]) <= TOLERANCE for a in here))
    big = [d for s, d in zip(shifts, detected, strict=True) if s["size_sd"] >= 2]
    assert sum(big) / len(big) == pytest.approx(figures["recall_2sd"], abs=1e-6)
    most = max(len(n) for n, d in zip(near, detected, strict=True) if d)
    assert most == figures["max_alerts_per_shift"] <= 1


@pytest.mark.slow
@pytest.mark.sandbox
def test_notebook_draws_plotly_charts_quickly(run):
    assert_succeeded(run)
    charts = plotly_outputs(run["nb"])
    assert len(charts) == 3  # bimodal series with alerts, their statistics, summary by pattern
    assert all(chart["data"][PLOTLY]["data"] for chart in charts)
    size = Path(run["outcome"].output_path).stat().st_size
    assert size < 1_000_000, f"output notebook of {size:,} bytes"
    cells = [c for c in run["nb"].cells if c.cell_type == "code"]
    seconds = sum(c.metadata.get("papermill", {}).get("duration") or 0 for c in cells)
    assert seconds < 60, f"cells ran for {seconds:.1f} s"
