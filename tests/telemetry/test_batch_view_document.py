"""examples/batch_view.ipynb, run by the portal's executor, compares the same content both
ways and records the figures it holds against the source document's.

The notebook runs as in tests/telemetry/test_notebooks_als_histograms_views.py (papermill
in the portal kernel, in a sandbox, local Spark) on the same small sample (8,000 pings
over 4 days, with the raw JSON export). The document: Parquet files "up to 8x" smaller
than the raw JSON for the same content and compression; the notebook's same-content
ratio (both uncompressed) must lie within 5-12x. The speed-up depends on the size and is
not asserted here: bench/batch_view.py prints it at the documented sizes.
"""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import telemetry.sample
from recorded.extract import read_notebook_values
from tests import sandboxes
from tests.telemetry.test_notebooks_als_histograms_views import DAYS, END, EXAMPLES, PINGS

pytestmark = [pytest.mark.slow, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def run():
    """The sample, and the executed notebook's recorded values by name."""
    import nbformat

    base = sandboxes.shared_dir("batch-view-document")
    summary = telemetry.sample.generate(
        base / "pings", pings=PINGS, days=DAYS, end_date=END, json_dir=base / "pings_json"
    )
    views = base / "views"
    output = base / "output.ipynb"
    outcome = sandboxes.execute(
        EXAMPLES / "batch_view.ipynb",
        output,
        {},
        read_only=[base],
        writable=[views],
        timeout=900,
        env={"TELEMETRY_DATA_ROOT": str(base / "pings"), "TELEMETRY_VIEWS_ROOT": str(views)},
    )
    assert outcome.status == "succeeded", (
        f"{outcome.status}: {outcome.message}\n{outcome.error.get('traceback', '')}"
    )
    nb = nbformat.read(output, as_version=4)
    recorded = {v.name: v for v in read_notebook_values(nb).values}
    return {"summary": summary, "views": views, "recorded": recorded}


def test_same_content_size_ratio_within_5_to_12(run):
    recorded = run["recorded"]
    assert 5 <= recorded["size_ratio_same_content"].number <= 12
    assert recorded["size_ratio_same_content"].number == pytest.approx(
        recorded["raw_bytes"].number / recorded["parquet_bytes"].number
    )


def test_the_same_rows_both_ways_uncompressed(run):
    recorded, summary = run["recorded"], run["summary"]
    assert recorded["rows"].number == summary["rows"] == PINGS
    assert recorded["raw_bytes"].number == summary["json_bytes"]
    copy = Path(run["views"]) / "experiment_pings_same_content"
    parquet = list(copy.rglob("*.parquet"))
    assert parquet and recorded["parquet_bytes"].number == sum(p.stat().st_size for p in parquet)
    codecs = {
        meta.row_group(g).column(c).compression
        for meta in (pq.ParquetFile(p).metadata for p in parquet)
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    }
    assert codecs == {"UNCOMPRESSED"}, "the same (no) compression as the raw JSON"
    columns = [*telemetry.sample.PARTITION_COLUMNS, *telemetry.sample.SCHEMA.names]
    assert all(pq.ParquetFile(p).schema_arrow.names == columns for p in parquet), (
        "the JSON's columns, in its order"
    )


def test_speed_up_is_recorded_not_judged(run):
    recorded = run["recorded"]
    for name in ("speedup_same_query", "json_seconds", "parquet_seconds", "speedup_view"):
        assert recorded[name].number > 0, name
    table = recorded["figures_vs_document"]
    assert table.kind == "table" and len(table.data["rows"]) == 3
