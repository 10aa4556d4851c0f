"""``portalctl runs compare A B`` on the fake portal."""

import json

COMPARISON = {
    "a": {"id": 3, "state": "SUCCEEDED", "version": 1, "created_at": None},
    "b": {"id": 5, "state": "FAILED", "version": 2, "created_at": None},
    "job": {"id": 1, "name": "daily"},
    "version_changed": True,
    "parameters": [
        {
            "name": "day",
            "a": "2026-01-01",
            "b": "2026-01-02",
            "in_a": True,
            "in_b": True,
            "changed": True,
        },
        {"name": "n", "a": 1, "b": 1, "in_a": True, "in_b": True, "changed": False},
        {"name": "new", "a": None, "b": 7, "in_a": False, "in_b": True, "changed": True},
    ],
    "values": [
        {"name": "rmse", "a": "0.5", "b": "0.75", "changed": True},
        {"name": "n", "a": "3", "b": "3", "changed": False},
    ],
    "cells": [
        {
            "index": 0,
            "status": "changed",
            "a_index": 0,
            "b_index": 0,
            "cell_type": "code",
            "source_changed": True,
            "outputs_changed": False,
        },
        {
            "index": 1,
            "status": "unchanged",
            "a_index": 1,
            "b_index": 1,
            "cell_type": "code",
            "source_changed": False,
            "outputs_changed": False,
        },
        {
            "index": 2,
            "status": "added",
            "a_index": None,
            "b_index": 2,
            "cell_type": "code",
            "source_changed": False,
            "outputs_changed": False,
        },
    ],
    "cells_unavailable": "",
    "web_path": "/runs/3/compare/5/",
}


def test_runs_compare_prints_a_summary(fake, portalctl):
    fake.json("GET", "/api/runs/3/compare/5/", COMPARISON)
    result = portalctl("runs", "compare", "3", "5")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "A: run #3 SUCCEEDED (notebook v1)",
        "B: run #5 FAILED (notebook v2)",
        "notebook: versions differ",
        "parameters: 2 changed",
        '  day: "2026-01-01" → "2026-01-02"',
        "  new: (absent) → 7",
        "recorded values: 1 changed",
        "  rmse: 0.5 → 0.75",
        "cells: 1 changed, 1 added, 0 removed, 1 unchanged",
        "  changed  A 1 ↔ B 1 (source)",
        "  added    B 3",
    ]


def test_runs_compare_json_and_errors(fake, portalctl):
    fake.json("GET", "/api/runs/3/compare/5/", COMPARISON)
    result = portalctl("runs", "compare", "3", "5", "--json")
    assert json.loads(result.stdout) == COMPARISON
    result = portalctl("runs", "compare", "3", "9")
    assert result.exit_code == 2 and "not_found" in result.stderr


def test_runs_compare_without_cells_says_why(fake, portalctl):
    fake.json(
        "GET",
        "/api/runs/3/compare/5/",
        {**COMPARISON, "cells": None, "cells_unavailable": "Run #5's output expired."},
    )
    result = portalctl("runs", "compare", "3", "5")
    assert result.stdout.splitlines()[-1] == "cells: not compared: Run #5's output expired."
