"""examples/hangs_by_last_frame.ipynb, run by the portal's executor, earns the source
document's figures.

The notebook runs as in tests/telemetry/test_notebooks_hangs_regressions.py (its
``execute`` helper: papermill in the portal kernel, in a sandbox), on the same small
sample (10,000 pings over 4 days, the last three read); the figures it records with
scrapbook's glue, as the portal reads them, are checked against the document: top ten
within 1 point, plugin share within 3 points, both medians between 1 and 2 s with the
duration test's p > 0.05, OS shares within 1 point.
"""

import pytest

import telemetry.sample
from recorded.extract import read_notebook_values
from tests import sandboxes
from tests.telemetry.test_hangs_calibration import DOCUMENT_OS, DOCUMENT_TOP10
from tests.telemetry.test_notebooks_hangs_regressions import (
    DAYS,
    END,
    HANGS,
    HANGS_PARAMETERS,
    PINGS,
    assert_succeeded,
    execute,
)


@pytest.fixture(scope="module")
def recorded():
    """The executed notebook's recorded values, by name."""
    base = sandboxes.shared_dir("hangs-document")
    telemetry.sample.generate(base / "pings", pings=PINGS, days=DAYS, end_date=END)
    run = execute(HANGS, base, HANGS_PARAMETERS)
    assert_succeeded(run)
    return {v.name: v for v in read_notebook_values(run["nb"]).values}


pytestmark = [pytest.mark.slow, pytest.mark.sandbox]


def test_top_ten_within_one_point_of_the_document(recorded):
    frames = [recorded[f"top10_frame_{rank}"].text for rank in range(1, 11)]
    assert set(frames) == {frame for frame, _ in DOCUMENT_TOP10}
    for rank, (_, want) in enumerate(DOCUMENT_TOP10, start=1):
        assert 100 * recorded[f"top10_share_{rank}"].number == pytest.approx(want, abs=1.0)
    table = recorded["top10_vs_document"]
    assert table.kind == "table" and len(table.data["rows"]) == 10
    assert recorded["distinct_last_frames"].number >= 300


def test_every_hang_longer_than_500_ms(recorded):
    assert recorded["min_duration_ms"].number > 500


def test_plugin_share_and_durations_as_the_document(recorded):
    assert 100 * recorded["plugin_share"].number == pytest.approx(15, abs=3)
    assert 1 <= recorded["median_plugin_s"].number <= 2
    assert 1 <= recorded["median_other_s"].number <= 2
    assert recorded["duration_test_p"].number > 0.05


def test_os_shares_within_one_point_of_the_document(recorded):
    total = sum(DOCUMENT_OS.values())
    for name, count in DOCUMENT_OS.items():
        share = recorded[f"os_share_{name.lower()}"].number
        assert 100 * share == pytest.approx(100 * count / total, abs=1.0), name
