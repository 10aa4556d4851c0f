"""The Talos series of ``telemetry.sample.generate_talos`` at its defaults (seed 42, 120
days): the noise patterns and the recorded shifts that examples/regression_detection.ipynb
scores its detectors against, and whose counts its description quotes. Fast: numpy and
pyarrow only, no Spark.
"""

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from telemetry import sample

PATTERNS = {"gaussian", "bimodal", "outliers", "drift"}


@pytest.fixture(scope="module")
def talos(tmp_path_factory):
    out = tmp_path_factory.mktemp("talos") / "talos"
    summary = sample.generate_talos(out)
    table = pq.read_table(out / "part-00000.parquet")
    runs: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for test, platform, push, value in zip(
        *(table[c].to_pylist() for c in ("test", "platform", "push", "value")), strict=True
    ):
        runs.setdefault((test, platform), ([], []))
        runs[(test, platform)][0].append(push)
        runs[(test, platform)][1].append(value)
    return {
        "summary": summary,
        "table": table,
        "runs": {k: (np.array(p), np.array(v)) for k, (p, v) in runs.items()},
        "shifts": json.loads((out / sample.TALOS_SHIFTS_NAME).read_text()),
        "series": json.loads((out / sample.TALOS_SERIES_NAME).read_text()),
    }


def test_default_output_has_a_few_hundred_series_of_every_pattern(talos):
    summary, series = talos["summary"], talos["series"]
    # The notebook's description quotes these counts: update it with them.
    assert (summary["series"], summary["rows"], summary["shifts"]) == (240, 76_078, 188)
    assert summary["patterns"] == {"gaussian": 75, "bimodal": 70, "outliers": 49, "drift": 46}
    assert len(series) == len(talos["runs"]) == 240
    assert {s["pattern"] for s in series} == PATTERNS
    assert talos["table"].schema.names == ["test", "platform", "date", "push", "value"]
    for s in series:
        pushes, values = talos["runs"][(s["test"], s["platform"])]
        assert s["runs"] == len(values) and pushes.tolist() == list(range(len(values)))
        assert (values > 0).all() and 0.01 <= s["noise_sd"] <= 0.03
        bimodal = s["pattern"] == "bimodal"
        assert (s["upper_share"] > 0) == bimodal and (s["mode_offset_sd"] >= 4) == bimodal
    # Every pattern has series with no shift at all, and series with shifts.
    for pattern in PATTERNS:
        counts = Counter(s["shifts"] for s in series if s["pattern"] == pattern)
        assert counts[0] >= 10 and counts[1] + counts[2] >= 10, (pattern, counts)


def test_recorded_shifts_are_where_and_as_big_as_the_data_says(talos):
    shifts, series = talos["shifts"], talos["series"]
    noise = {(s["test"], s["platform"]): s["noise_sd"] for s in series}
    assert sum(s["shifts"] for s in series) == len(shifts)
    directions = Counter(s["direction"] for s in shifts)
    assert directions["regression"] == talos["summary"]["regressions"] == 128
    assert directions["improvement"] == 60
    sizes = np.array([s["size_sd"] for s in shifts])
    assert 1 <= sizes.min() < 1.5 and 7.5 < sizes.max() <= 8
    assert (sizes >= 2).sum() == 151
    for shift in shifts:
        key = (shift["test"], shift["platform"])
        pushes, values = talos["runs"][key]
        push = shift["push"]
        assert 0 < push < len(values)
        before, after = np.log(values[push - 12 : push]), np.log(values[push : push + 12])
        sign = 1 if shift["direction"] == "regression" else -1
        assert np.sign(shift["after_mean"] - shift["before_mean"]) == sign
        if shift["pattern"] in ("gaussian", "drift"):
            # The step between the 12 runs on each side, in SD of the series' noise: the
            # recorded size, give or take 4 standard errors of the difference of two means
            # (sqrt(2 / 12) SD each), more with a drift (up to about 1.3 SD in 12 runs).
            step = (after.mean() - before.mean()) / noise[key]
            slack = 1.75 if shift["pattern"] == "gaussian" else 3.0
            assert abs(step - sign * shift["size_sd"]) < slack, (shift, step)


def test_bimodal_series_alternate_between_two_separated_modes(talos):
    measured = []
    for s in talos["series"]:
        if s["pattern"] != "bimodal" or s["shifts"]:
            continue
        _, values = talos["runs"][(s["test"], s["platform"])]
        x = np.log(values) / s["noise_sd"]
        lower = np.median(np.sort(x)[: len(x) // 3])  # at most half the runs are upper
        upper = x > lower + s["mode_offset_sd"] / 2
        # Runs change mode at random: both modes come back again and again.
        assert np.count_nonzero(np.diff(upper.astype(int))) > 20
        measured.append(
            (
                s["upper_share"],
                upper.mean(),
                s["mode_persistence"],
                np.corrcoef(upper[:-1], upper[1:])[0, 1],
            )
        )
    assert len(measured) >= 20
    share, seen_share, persistence, seen_persistence = np.array(measured).T
    # Streaks make a series' share vary more than independent runs would: compare on average.
    assert np.abs(seen_share - share).max() < 0.2
    assert abs((seen_share - share).mean()) < 0.03
    assert 0 <= persistence.min() < 0.1 and 0.5 < persistence.max() <= 0.6
    assert np.corrcoef(persistence, seen_persistence)[0, 1] > 0.8
