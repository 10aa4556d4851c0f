"""The example notebooks addon_recommender, histogram_rollups and batch_view.

Each is executed through the portal's executor (papermill in the portal kernel, local
Spark) against one small generated sample (pings + raw JSON export), and its printed
``name=value`` lines and final JSON are checked against what the sample holds. The
static checks (valid notebooks, typed parameters, no stored outputs) are fast; the
executions are marked slow (about a minute each on two cores).
"""

import json
import math
import re
import zlib
from collections import Counter
from pathlib import Path

import nbformat
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import telemetry
import telemetry.sample
from jobs import notebooks
from tests import sandboxes

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples"
PINGS = 8000
DAYS = 4
END = "20261115"
PLOTLY = "application/vnd.plotly.v1+json"
LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.M)

EXPECTED_PARAMETERS = {
    "addon_recommender.ipynb": {
        "data_path": "str",
        "channel": "str",
        "sample_fraction": "float",
        "reg_params": "list",
        "num_folds": "int",
        "rank": "int",
        "max_iter": "int",
        "alpha": "float",
        "top_n": "int",
        "privacy_addon": "str",
        "webdev_addon": "str",
        "seed": "int",
        "shuffle_partitions": "int",
    },
    "histogram_rollups.ipynb": {
        "data_path": "str",
        "group_by": "str",
        "new_day": "str",
        "histogram_metric": "str",
        "histogram_channel": "str",
        "evolution_metric": "str",
        "evolution_channel": "str",
        "view_name": "str",
        "shuffle_partitions": "int",
    },
    "batch_view.ipynb": {
        "data_path": "str",
        "json_path": "str",
        "view_name": "str",
        "experiment_buckets": "int",
        "enrolled_bucket": "int",
        "repeats": "int",
        "shuffle_partitions": "int",
    },
}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gen():
    """The sample generator, telemetry.sample."""
    return telemetry.sample


@pytest.fixture(scope="module")
def sample(gen):
    """A small sample: Parquet pings, their raw JSON export, and a views root beside them."""
    base = sandboxes.shared_dir("notebooks")
    summary = gen.generate(
        base / "pings", pings=PINGS, days=DAYS, end_date=END, json_dir=base / "pings_json"
    )
    partitioning = ds.partitioning(
        pa.schema([(c, pa.string()) for c in telemetry.PARTITION_COLUMNS]), flavor="hive"
    )
    table = ds.dataset(base / "pings", format="parquet", partitioning=partitioning).to_table()
    return {
        "base": base,
        "pings": base / "pings",
        "json": base / "pings_json",
        "views": base / "views",
        "summary": summary,
        "table": table,
    }


def run(name, sample, tmp_path, parameters=None):
    """Execute examples/<name> with the portal's executor; return (printed values, results,
    output nb)."""
    output = tmp_path / f"out-{name}"
    outcome = sandboxes.execute(
        EXAMPLES / name,
        output,
        parameters or {},
        read_only=[sample["base"]],
        writable=[sample["views"]],
        timeout=900,
        env={
            "TELEMETRY_DATA_ROOT": str(sample["pings"]),
            "TELEMETRY_VIEWS_ROOT": str(sample["views"]),
        },
    )
    assert outcome.status == "succeeded", (
        f"{outcome.status}: {outcome.message}\n{outcome.error.get('traceback', '')}"
    )
    nb = nbformat.read(output, as_version=4)
    stdout = "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stdout"
    )
    printed = dict(LINE.findall(stdout))
    last = [line for line in stdout.splitlines() if line.strip()][-1]
    results = json.loads(last)
    plots = sum(
        PLOTLY in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") in ("display_data", "execute_result")
    )
    return printed, results, plots


def histogram_total(column) -> int:
    return sum(
        count for chunk in column.chunks for entries in chunk.to_pylist() for _, count in entries
    )


def bucket_sums(column) -> Counter:
    sums = Counter()
    for chunk in column.chunks:
        for entries in chunk.to_pylist():
            for bucket, count in entries:
                sums[bucket] += count
    return sums


# --- the notebooks as files ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_notebook_is_valid_typed_and_clean(name):
    data = (EXAMPLES / name).read_bytes()
    parsed = notebooks.read_notebook(data)
    nb = parsed.nb
    assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == "python3"
    schema = notebooks.inspect_parameters(nb)
    assert {param: spec["type"] for param, spec in schema.items()} == EXPECTED_PARAMETERS[name]
    for param in ("data_path", "json_path"):
        if param in schema:
            assert schema[param]["default"] == "", (
                "paths default to the kernel's TELEMETRY_DATA_ROOT"
            )
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert all(not c.outputs and c.execution_count is None for c in code), "no stored outputs"
    assert "print(json.dumps(results))" in code[-1].source
    assert any("fig.show()" in c.source for c in code)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2, (
        "prose explains the steps"
    )


def test_recommender_defaults():
    schema = notebooks.inspect_parameters(
        notebooks.read_notebook((EXAMPLES / "addon_recommender.ipynb").read_bytes()).nb
    )
    assert schema["reg_params"]["default"] == [0.01, 0.1, 1.0]
    assert schema["num_folds"]["default"] == 3
    assert (
        schema["privacy_addon"]["default"] == "uBlock Origin"
        and schema["webdev_addon"]["default"] == "Firebug"
    )


# --- executions ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.sandbox
def test_addon_recommender(sample, tmp_path, gen):
    printed, results, plots = run("addon_recommender.ipynb", sample, tmp_path)
    community = {name: c for _, name, c, _ in gen.ADDONS}

    assert float(printed["reg_param"]) in (0.01, 0.1, 1.0)
    assert results["reg_param"] == float(printed["reg_param"])
    assert set(results["cv_auc"]) == {"0.01", "0.1", "1.0"}
    assert all(0.5 < auc <= 1 for auc in results["cv_auc"].values()), "the ranking beats chance"
    assert results["cv_auc"][str(results["reg_param"])] == max(results["cv_auc"].values())

    privacy = json.loads(printed["privacy_user_top"])
    webdev = json.loads(printed["webdev_user_top"])
    assert privacy == results["privacy_user_top"] and webdev == results["webdev_user_top"]
    assert len(privacy) == 5 and len(webdev) == 5
    assert "uBlock Origin" not in privacy and "Firebug" not in webdev, (
        "already installed add-ons are not recommended"
    )
    assert sum(community[n] == "privacy" for n in privacy) >= 3, privacy
    assert sum(community[n] == "web-development" for n in webdev) >= 3, webdev
    assert community[privacy[0]] == "privacy" and community[webdev[0]] == "web-development"
    assert float(printed["privacy_user_same_community_share"]) >= 0.6
    assert int(printed["addons"]) == len(
        {
            n
            for chunk in sample["table"]["addon_names"].chunks
            for names in chunk.to_pylist()
            for n in names
        }
    )
    assert plots >= 2


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize(("group_by", "day_index"), [("build_id", -1), ("submission_date", -2)])
def test_histogram_rollups(sample, tmp_path, group_by, day_index):
    table = sample["table"]
    new_day = sample["summary"]["dates"][day_index]
    parameters = {"group_by": group_by, "new_day": new_day if day_index != -1 else ""}
    printed, results, plots = run("histogram_rollups.ipynb", sample, tmp_path, parameters)

    assert printed["merge_ok"] == "True" and results["merge_ok"] is True
    assert printed["new_day"] == new_day and printed["group_by"] == group_by
    upto = table.filter(pc.less_equal(table["submission_date"], new_day))
    # The merged aggregates hold every count of every ping up to the new day, exactly.
    assert results["totals"] == {
        "GC_MS": histogram_total(upto["gc_ms"]),
        "SIMPLE_MEASURES_UPTIME": histogram_total(upto["simple_measures_uptime"]),
    }
    assert int(printed["merged_combinations"]) == int(printed["recomputed_combinations"]) > 0
    inserted, updated = int(printed["inserted_combinations"]), int(printed["updated_combinations"])
    assert inserted > 0
    if group_by == "submission_date":
        assert updated == 0, "a new day never updates another day's aggregates"
    else:
        assert updated > 0

    # Histogram view (release GC_MS by default): the same sums as the pings, and a median
    # inside the bucket that holds the middle observation.
    release = upto.filter(pc.equal(upto["channel"], "release"))
    sums = bucket_sums(release["gc_ms"])
    assert int(printed["histogram_total"]) == sum(sums.values())
    assert int(printed["histogram_pings"]) == release.num_rows
    bounds = sorted(sums)
    half, cumulative = sum(sums.values()) / 2, 0
    cumulatives = [cumulative := cumulative + sums[b] for b in bounds]
    middle = next(i for i, c in enumerate(cumulatives) if c >= half)
    median = float(printed["histogram_median"])
    assert bounds[middle] <= median <= (bounds[middle + 1] if middle + 1 < len(bounds) else 10_000)

    medians = json.loads(printed["evolution_medians"])
    builds = {
        f"{c}/{b}"
        for c, b in zip(upto["channel"].to_pylist(), upto["build_id"].to_pylist(), strict=True)
    }
    assert set(medians) == builds and int(printed["evolution_builds"]) == len(builds)
    assert all(0 < m < 10_000 for m in medians.values())
    assert (sample["views"] / "histogram_rollups").is_dir()
    assert int(printed["view_rows"]) == int(printed["merged_combinations"])
    assert plots >= 2


@pytest.mark.slow
@pytest.mark.sandbox
def test_batch_view(sample, tmp_path):
    printed, results, plots = run("batch_view.ipynb", sample, tmp_path)
    table = sample["table"]
    enrolled = [zlib.crc32(c.encode()) % 10 == 0 for c in table["client_id"].to_pylist()]

    assert printed["same_result"] == "True" and results["same_result"] is True
    for key in (
        "speedup_same_query",
        "speedup_view",
        "size_ratio_same_content",
        "bytes_read_ratio",
        "json_seconds",
        "parquet_seconds",
        "view_seconds",
    ):
        value = float(printed[key])
        assert math.isfinite(value) and value > 0, (key, value)
    assert float(printed["bytes_read_ratio"]) > 5, "the view reads far fewer bytes than the JSON"
    json_files = sorted(sample["json"].glob("pings-*.json"))
    assert (
        int(printed["raw_bytes"])
        == sum(p.stat().st_size for p in json_files)
        == sample["summary"]["json_bytes"]
    )
    view_dir = Path(printed["view"])
    assert view_dir == sample["views"] / "experiment_pings"
    assert int(printed["view_bytes"]) == sum(p.stat().st_size for p in view_dir.rglob("*.parquet"))
    assert int(printed["view_rows"]) == sum(enrolled)
    expected = Counter(
        os_name for os_name, e in zip(table["os_name"].to_pylist(), enrolled, strict=True) if e
    )
    assert {os_name: v["pings"] for os_name, v in results["answer"].items()} == dict(expected)
    assert plots >= 1
