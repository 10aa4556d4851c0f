"""``portalctl jobs backfill|sweep`` and ``portalctl groups ...`` on the fake portal: the
requests they send, what they print, --wait and exit codes. The same commands against a
live portal: test_groups_live.py."""

import json

import pytest

from portalctl.groups import parse_axes, progress_line, sweep_values


def group_body(group_id=12, kind="backfill", runs=None, **progress):
    counts = {"succeeded": 0, "failed": 0, "running": 0, "queued": 0, "cancelled": 0}
    counts.update(progress)
    total = sum(counts.values())
    active = counts["running"] + counts["queued"]
    return {
        "id": group_id,
        "job": 7,
        "kind": kind,
        "created_at": "2026-11-02T09:00:00Z",
        "max_concurrent": 2,
        "parameters": {"x": [1, 2]} if kind == "sweep" else {},
        "combine": "grid",
        "range_start": None,
        "range_end": None,
        "rerun_existing": False,
        "skipped_slots": 0,
        "progress": {**counts, "total": total, "done": total - active},
        "runs": runs or [],
        "web_url": f"/groups/{group_id}/",
    }


def run_row(run_id, state, slot="2026-10-24T04:00:00Z", **parameters):
    return {
        "id": run_id,
        "state": state,
        "trigger": "backfill",
        "logical_date": slot,
        "parameters": parameters,
    }


def test_sweep_values_are_json_where_they_parse_else_text():
    assert sweep_values("1,2.5,true,abc") == [1, 2.5, True, "abc"]
    assert sweep_values('[[1, 2], "a,b"]') == [[1, 2], "a,b"]
    assert sweep_values("1,02", as_text=True) == ["1", "02"]
    assert sweep_values("[1, 2]", as_text=True) == ["1", "2"]
    assert parse_axes(["x=1,2", "name=3"], {"name"}) == {"x": [1, 2], "name": ["3"]}
    for bad in (["x"], ["=1"], ["x="], ["x=1", "x=2"]):
        with pytest.raises(ValueError):
            parse_axes(bad)


def test_progress_line_counts_items_by_their_newest_run():
    body = group_body(succeeded=2, failed=1, running=1, queued=1)
    assert progress_line(body) == "3 of 5 done: 2 succeeded, 1 failed; 1 running, 1 queued"
    assert progress_line(group_body(queued=3)) == "0 of 3 done; 3 queued"


def test_backfill_sends_the_range_as_typed_and_prints_the_group_id(fake, portalctl):
    fake.json("POST", "/api/jobs/7/backfill/", group_body(queued=3), status=201)
    result = portalctl(
        "jobs",
        "backfill",
        "7",
        "--from",
        "2026-10-24T00:00",
        "--to",
        "2026-10-26T23:00",
        "-p",
        "name=a=b",
        "-p",
        "x=5",
        "--concurrency",
        "3",
        "--rerun-existing",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "12\n"
    assert "backfill 12: 3 runs: http://portal.test/groups/12/" in result.stderr
    (request,) = fake.sent("POST", "/api/jobs/7/backfill/")
    assert json.loads(request.content) == {
        "start": "2026-10-24T00:00",
        "end": "2026-10-26T23:00",
        "parameters": {"name": "a=b", "x": "5"},
        "rerun_existing": True,
        "max_concurrent": 3,
    }


def test_sweep_sends_typed_values_keeping_text_parameters_text(fake, portalctl):
    fake.json(
        "GET",
        "/api/jobs/7/versions/",
        [{"number": 2, "parameter_schema": {"x": {"type": "int"}, "name": {"type": "str"}}}],
    )
    fake.json("POST", "/api/jobs/7/sweep/", group_body(kind="sweep", queued=4), status=201)
    result = portalctl("jobs", "sweep", "7", "-p", "x=1,2", "-p", "name=1,b", "--zip", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "sweep"
    (request,) = fake.sent("POST", "/api/jobs/7/sweep/")
    assert json.loads(request.content) == {
        "parameters": {"x": [1, 2], "name": ["1", "b"]},
        "combine": "zip",
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["jobs", "backfill", "7", "--from", "soon", "--to", "2026-01-02"], "ISO 8601"),
        (["jobs", "backfill", "7", "--to", "2026-01-02"], "--from"),
        (
            ["jobs", "backfill", "7", "--from", "2026-01-01", "--to", "2026-01-02", "-p", "x"],
            "NAME=VALUE",
        ),
        (["jobs", "sweep", "7"], "--parameter"),
        (["jobs", "sweep", "7", "-p", "x=1", "-p", "x=2"], "given twice"),
        (["jobs", "sweep", "7", "-p", "x=1", "--concurrency", "0"], "Usage"),
    ],
)
def test_bad_arguments_exit_2_without_a_request(fake, portalctl, args, message):
    result = portalctl(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert fake.requests == []


def test_a_refused_start_prints_the_apis_reason_and_exits_2(fake, portalctl):
    fake.json(
        "POST",
        "/api/jobs/7/backfill/",
        {
            "code": "invalid",
            "detail": "Invalid input.",
            "errors": {"non_field_errors": ["This job has no schedule."]},
        },
        status=400,
    )
    result = portalctl("jobs", "backfill", "7", "--from", "2026-01-01", "--to", "2026-01-02")
    assert result.exit_code == 2 and result.stdout == ""
    assert "Invalid input. (invalid)" in result.stderr
    # A start is never repeated: a repeat could start a second group.
    assert len(fake.sent("POST", "/api/jobs/7/backfill/")) == 1


def test_wait_follows_the_group_and_exits_1_naming_the_runs_that_failed(fake, portalctl):
    fake.json("POST", "/api/jobs/7/backfill/", group_body(queued=2), status=201)
    fake.json(
        "GET",
        "/api/groups/12/",
        group_body(running=1, queued=1),
        group_body(running=1, succeeded=1),
        group_body(running=1, succeeded=1),
        group_body(
            succeeded=1,
            failed=1,
            runs=[run_row(40, "SUCCEEDED"), run_row(41, "FAILED", "2026-10-25T05:00:00Z")],
        ),
    )
    result = portalctl(
        "jobs", "backfill", "7", "--from", "2026-10-24", "--to", "2026-10-25T23:00", "--wait"
    )
    assert result.exit_code == 1
    # One progress line per change, on stderr.
    assert result.stderr.count("1 of 2 done: 1 succeeded; 1 running") == 1
    assert "backfill 12 of job 7: 0 of 2 done; 1 running, 1 queued" in result.stderr
    assert "group 12: 1 did not succeed (run 41 FAILED)" in result.stderr
    assert result.stdout.splitlines() == [
        "backfill 12 of job 7: 2 of 2 done: 1 succeeded, 1 failed",
        "ID  STATE      SLOT                  TRIGGER",
        "40  SUCCEEDED  2026-10-24T04:00:00Z  backfill",
        "41  FAILED     2026-10-25T05:00:00Z  backfill",
    ]
    assert fake.sleeps == [2.0] * 4


def test_wait_exits_0_when_every_run_succeeded(fake, portalctl):
    done = group_body(kind="sweep", succeeded=2, runs=[run_row(1, "SUCCEEDED", x=1)])
    fake.json("POST", "/api/jobs/7/sweep/", group_body(kind="sweep", queued=2), status=201)
    fake.json("GET", "/api/groups/12/", done)
    result = portalctl("jobs", "sweep", "7", "-p", "x=1,2", "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == done


def test_groups_list_show_cancel_and_retry(fake, portalctl):
    sweep = group_body(
        kind="sweep",
        succeeded=1,
        running=1,
        runs=[run_row(5, "SUCCEEDED", x=1, y=0), run_row(6, "RUNNING", x=2, y=0)],
    )
    fake.json("GET", "/api/groups/", [sweep])
    fake.json("GET", "/api/groups/12/", sweep)
    fake.json("POST", "/api/groups/12/cancel/", group_body(kind="sweep", succeeded=1, cancelled=1))
    fake.json("POST", "/api/groups/12/retry/", group_body(kind="sweep", succeeded=1, queued=1))
    listed = portalctl("groups", "list")
    assert listed.stdout.splitlines() == [
        "ID  JOB  KIND   CREATED_AT            PROGRESS",
        "12  7    sweep  2026-11-02T09:00:00Z  1 of 2 done: 1 succeeded; 1 running",
    ]
    shown = portalctl("groups", "show", "12")
    assert shown.stdout.splitlines() == [
        "sweep 12 of job 7: 1 of 2 done: 1 succeeded; 1 running",
        "ID  STATE      X",
        "5   SUCCEEDED  1",
        "6   RUNNING    2",
    ]
    assert json.loads(portalctl("groups", "show", "12", "--json").stdout) == sweep
    cancelled = portalctl("groups", "cancel", "12")
    assert cancelled.stdout == "sweep 12 of job 7: 2 of 2 done: 1 succeeded, 1 cancelled\n"
    retried = portalctl("groups", "retry", "12")
    assert retried.stdout == "sweep 12 of job 7: 1 of 2 done: 1 succeeded; 1 queued\n"
    missing = portalctl("groups", "show", "99")
    assert missing.exit_code == 2 and "not_found" in missing.stderr
