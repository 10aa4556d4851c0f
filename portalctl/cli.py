"""The ``portalctl`` commands (typer), on the portal's REST API (docs/api.md).

Exit codes: 0 success; 1 a run (or a cluster launch) that was waited for and did not
succeed; 2 anything else that went wrong: a refused request (bad token, missing scope,
limit, invalid input: the API's ``detail`` is printed), an unreachable portal, a usage
error. With ``--json`` stdout holds only the API's JSON (the object, or a list of them);
progress and messages always go to stderr.
"""

import functools
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar
from urllib.parse import urlsplit

import typer
from rich.console import Console
from typer.core import TyperCommand

from portalctl import config as settings
from portalctl.client import (
    FINAL_RUN_STATES,
    SETTLED_CLUSTER_STATES,
    ApiError,
    PortalClient,
    new_idempotency_key,
)
from portalctl.compare import format_comparison
from portalctl.groups import (
    headline,
    is_active,
    list_rows,
    parse_assignments,
    parse_axes,
    run_rows,
    text_parameters,
)
from portalctl.progress import RunProgress, cells, describe, elapsed, format_elapsed

EXIT_OK, EXIT_NOT_SUCCEEDED, EXIT_ERROR = 0, 1, 2
#: Seconds between two polls of a run or cluster being waited for.
POLL_SECONDS = 1.0
CLUSTER_POLL_SECONDS = 2.0
GROUP_POLL_SECONDS = 2.0

#: How commands get their client; tests swap it for one on an httpx.MockTransport.
make_client: Callable[[settings.Config], PortalClient] = PortalClient

app = typer.Typer(
    name="portalctl",
    help="Run notebooks, follow runs and launch Spark clusters on the Analysis Portal.\n\n"
    "Reads PORTAL_URL and PORTAL_TOKEN from the environment, else from the file "
    "`portalctl login` writes (~/.config/portalctl/config.toml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Scheduled notebooks.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs of notebooks.", no_args_is_help=True)
clusters_app = typer.Typer(help="Ad-hoc Spark clusters.", no_args_is_help=True)
groups_app = typer.Typer(
    help="Backfills and sweeps: groups of runs of one job.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(runs_app, name="runs")
app.add_typer(groups_app, name="groups")
app.add_typer(clusters_app, name="clusters")

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON on stdout, and nothing else there.")
]

P = ParamSpec("P")
R = TypeVar("R")


def stderr() -> Console:
    """A console on stderr, for progress and messages (stdout is for results)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    stderr().print(f"portalctl: {message}", markup=False)
    raise typer.Exit(code)


def api_command(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the API's refusals and a missing configuration into a message on stderr and
    exit code 2 (the API's ``detail``, with its per-field messages)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except settings.ConfigError as exc:
            fail(str(exc))
        except ApiError as exc:
            fields = [
                f"  {name}: {' '.join(map(str, msgs if isinstance(msgs, list) else [msgs]))}"
                for name, msgs in exc.errors.items()
                if name != "non_field_errors"
            ]
            fail("\n".join([f"{exc.detail} ({exc.code})", *fields]))

    return wrapper


def client() -> PortalClient:
    """A client on the configured portal; raises ConfigError when it is not configured."""
    return make_client(settings.load())


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def emit_fields(obj: dict[str, Any], keys: Iterable[str] | None = None) -> None:
    """``key: value`` lines on stdout (nested values as compact JSON)."""
    for key in keys or obj:
        value = obj.get(key)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        sys.stdout.write(f"{key}: {text}\n")


def emit_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned table on stdout (grep- and column-friendly; use --json to parse)."""
    grid = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col), *(len(r[i]) for r in grid)]) for i, col in enumerate(columns)]
    for line in [[c.upper() for c in columns], *grid]:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        sys.stdout.write("\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# --- run -----------------------------------------------------------------------------------

PARAMETER_FLAGS = ("-p", "--parameter")
_PAIR = "\0"  # joins NAME and VALUE in one option value; argv can never contain it


class ParameterPairs(TyperCommand):
    """A command whose ``-p NAME VALUE`` takes two values, as papermill's does (typer has
    no repeatable two-value options): each pair becomes one value, NAME and VALUE joined
    by a NUL byte, which no command-line argument can contain."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, join_parameter_pairs(args))


def join_parameter_pairs(args: list[str]) -> list[str]:
    """``[..., "-p", NAME, VALUE, ...]`` -> ``[..., "-p", NAME + NUL + VALUE, ...]`` (up to
    a ``--``). Raises typer.BadParameter when a ``-p`` lacks its two values."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out + args[i:]
        if arg in PARAMETER_FLAGS:
            if i + 2 >= len(args):
                raise typer.BadParameter("needs a NAME and a VALUE", param_hint="-p")
            out += [arg, f"{args[i + 1]}{_PAIR}{args[i + 2]}"]
            i += 3
            continue
        out.append(arg)
        i += 1
    return out


def parse_parameters(pairs: list[str] | None) -> dict[str, str]:
    """The ``-p`` values as ``{NAME: VALUE}``, values as typed: the portal converts each to
    the type the notebook's parameters cell gives it (int, float, bool, list, date)."""
    parameters: dict[str, str] = {}
    for pair in pairs or []:
        if _PAIR not in pair:
            raise typer.BadParameter(f"{pair!r}: give -p NAME VALUE", param_hint="-p")
        name, value = pair.split(_PAIR, 1)
        parameters[name] = value
    return parameters


def default_output(notebook: Path | None, run_id: int) -> Path:
    """Where ``run --wait`` saves the output: ``NAME.output.ipynb`` next to the notebook,
    or ``run-ID.output.ipynb`` in the working directory for ``--job`` alone."""
    if notebook is None:
        return Path(f"run-{run_id}.output.ipynb")
    return notebook.with_name(f"{notebook.stem}.output.ipynb")


def failure_summary(run: dict[str, Any]) -> str:
    """Why a run did not succeed: ``run 7 FAILED at cell index 2 (code cell 2 of 3):
    ZeroDivisionError: division by zero``. The cell index is the failing cell's in the
    output notebook (0-based, as nbformat counts); else the run's ``state_reason``."""
    parts = [f"run {run.get('id')} {run.get('state')}"]
    error = run.get("error") or {}
    if error.get("cell_index") is not None:
        parts.append(f"at cell index {error['cell_index']}")
    done, total = cells(run)
    if error and done and total:
        parts.append(f"(code cell {done} of {total})")
    line = " ".join(parts)
    if error.get("ename"):
        evalue = error.get("evalue") or ""
        return f"{line}: {error['ename']}" + (f": {evalue}" if evalue else "")
    if run.get("state_reason"):
        return f"{line}: {run['state_reason']}"
    return line


def follow_run(api: PortalClient, run: dict[str, Any]) -> dict[str, Any]:
    """Poll the run every POLL_SECONDS, showing its progress on stderr, until it has ended;
    return its last state. Ctrl-C stops watching (exit 130), not the run."""
    view = RunProgress(stderr(), run["id"])
    try:
        view.update(run, api.server_now)
        while run.get("state") not in FINAL_RUN_STATES:
            api.sleep(POLL_SECONDS)
            run = api.run(run["id"])
            view.update(run, api.server_now)
    except KeyboardInterrupt:
        view.close()
        fail(
            f"stopped watching; run {run['id']} goes on "
            f"(`portalctl runs cancel {run['id']}` stops it)",
            code=130,
        )
    finally:
        view.close()
    return run


@app.command(cls=ParameterPairs, no_args_is_help=True)
@api_command
def run(
    notebook: Annotated[
        Path | None,
        typer.Argument(
            metavar="NOTEBOOK",
            help="The notebook file to run. Without --job, the portal keeps one manual job per "
            "notebook file name and uploads a new version when the file changed.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    parameter: Annotated[
        list[str] | None,
        typer.Option(
            *PARAMETER_FLAGS,
            metavar="NAME VALUE",
            help="A notebook parameter (repeatable); the portal converts VALUE to the "
            "parameter's type.",
        ),
    ] = None,
    job: Annotated[
        int | None,
        typer.Option(
            "--job",
            help="Run this job: its current version, or NOTEBOOK as its new version if given.",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait for the run to end, showing its progress."),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to save the output notebook (implies --wait). "
            "Default: NAME.output.ipynb next to NOTEBOOK.",
            dir_okay=False,
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Send this Idempotency-Key (default: a new random one): the portal answers "
            "a repeat with the run it made the first time (for 24 h).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a notebook now; with --wait, follow it and download its output.

    Exit status: 0 when the run was accepted (with --wait: when it SUCCEEDED);
    1 when a waited-for run did not succeed (the failing cell and exception are
    printed); 2 on any other error (the API's message is printed).
    """
    parameters = parse_parameters(parameter)
    if notebook is None and job is None:
        raise typer.BadParameter("give a NOTEBOOK file, or --job ID", param_hint="NOTEBOOK")
    key = idempotency_key or new_idempotency_key()
    with client() as api:
        if notebook is not None:
            started = api.run_notebook(notebook, parameters, key, job_id=job)
        else:
            assert job is not None
            started = api.run_job(job, parameters, key)
        run_id = started["id"]
        err = stderr()
        page = started.get("web_url") or f"{api.config.url}/runs/{run_id}/"
        err.print(f"run {run_id} {started.get('state', '')}: {page}", markup=False)
        if not (wait or output):
            if as_json:
                emit_json(started)
            else:
                sys.stdout.write(f"{run_id}\n")
            return
        final = follow_run(api, started)
        dest = output or default_output(notebook, run_id)
        saved = _save_output(api, final, dest)
    if as_json:
        emit_json(final)
    succeeded = final.get("state") == "SUCCEEDED"
    took = elapsed(final)
    took_text = f" in {format_elapsed(took)}" if took is not None else ""
    if succeeded:
        if not as_json:
            sys.stdout.write(f"run {run_id} SUCCEEDED{took_text}; output: {dest}\n")
        if not saved:
            fail(f"run {run_id} succeeded but its output could not be saved to {dest}")
        return
    err.print(failure_summary(final), markup=False)
    if saved:
        err.print(f"output notebook: {dest}", markup=False)
    raise typer.Exit(EXIT_NOT_SUCCEEDED)


def _save_output(api: PortalClient, run: dict[str, Any], dest: Path) -> bool:
    """Download the run's output .ipynb to ``dest``; False (with a note) if there is none."""
    try:
        size = api.download_output(run["id"], dest)
    except ApiError as exc:
        stderr().print(f"no output notebook: {exc.detail} ({exc.code})", markup=False)
        return False
    except OSError as exc:
        stderr().print(f"cannot write {dest}: {exc}", markup=False)
        return False
    stderr().print(f"saved the output notebook ({size} bytes) to {dest}", markup=False)
    return True


# --- login, whoami -----------------------------------------------------------------------------


@app.command()
@api_command
def login(
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="PORTAL_URL", help="Portal URL (prompted for if absent)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="PORTAL_TOKEN",
            help="A personal API token (pap_...); prompted for, without echo, if absent.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a URL and token, and save them (mode 0600) for later commands."""
    # Prompts go to stderr: with --json, stdout holds the JSON only.
    url = url or typer.prompt("Portal URL", err=True)
    token = token or typer.prompt(
        "API token (from the portal's API tokens page)", hide_input=True, err=True
    )
    config = settings.Config(url=url.strip().rstrip("/"), token=token.strip())
    with make_client(config) as api:
        me = api.me()
    path = settings.save(config)
    if as_json:
        emit_json(me)
    stderr().print(
        f"signed in as {me.get('email')} (scopes: {', '.join(me.get('scopes') or [])}); "
        f"saved to {path}",
        markup=False,
    )


@app.command()
@api_command
def whoami(as_json: JsonFlag = False) -> None:
    """Show the user and scopes of the configured token."""
    with client() as api:
        me = api.me()
    if as_json:
        emit_json(me)
    else:
        emit_fields(me)


# --- jobs ---------------------------------------------------------------------------------


JOB_COLUMNS = ["id", "name", "schedule_kind", "enabled", "next_run_at"]


@jobs_app.command("list")
@api_command
def jobs_list(
    mine: Annotated[bool, typer.Option("--mine", help="Only my own jobs.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List the jobs you may see."""
    with client() as api:
        rows = api.jobs(mine=mine, limit=limit)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, JOB_COLUMNS)


@jobs_app.command("show")
@api_command
def jobs_show(
    job_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Show one job's settings."""
    with client() as api:
        job = api.job(job_id)
    if as_json:
        emit_json(job)
    else:
        emit_fields(job)


@jobs_app.command("pause")
@api_command
def jobs_pause(
    job_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Pause a job's schedule (runs already started go on)."""
    with client() as api:
        job = api.pause_job(job_id)
    if as_json:
        emit_json(job)
    else:
        sys.stdout.write(f"job {job_id} paused\n")


@jobs_app.command("resume")
@api_command
def jobs_resume(
    job_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Resume a job's schedule from its next slot."""
    with client() as api:
        job = api.resume_job(job_id)
    if as_json:
        emit_json(job)
    else:
        sys.stdout.write(f"job {job_id} resumed; next run at {job.get('next_run_at') or '-'}\n")


# --- runs ---------------------------------------------------------------------------------


RUN_COLUMNS = ["id", "job", "job_name", "state", "created_at", "progress"]
RUN_FIELDS = [
    "id",
    "job",
    "job_name",
    "state",
    "state_reason",
    "trigger",
    "parameters",
    "created_at",
    "started_at",
    "finished_at",
    "progress",
    "web_url",
]


def _with_progress(run: dict[str, Any]) -> dict[str, Any]:
    """The run with ``progress`` as one line ("cell 3 of 12 · 0:41"), for people."""
    return {**run, "progress": describe(run)}


@runs_app.command("list")
@api_command
def runs_list(
    job: Annotated[int | None, typer.Option("--job", help="Runs of this job only.")] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Runs in this state only, e.g. FAILED.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List runs, newest first."""
    with client() as api:
        rows = api.runs(job_id=job, state=state.upper() if state else None, limit=limit)
    if as_json:
        emit_json(rows)
    else:
        emit_table([_with_progress(r) for r in rows], RUN_COLUMNS)


@runs_app.command("show")
@api_command
def runs_show(
    run_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Show a run: state, progress, timings and, when it failed, the failing cell."""
    with client() as api:
        run = api.run(run_id)
    if as_json:
        emit_json(run)
        return
    emit_fields(_with_progress(run), RUN_FIELDS)
    if run.get("state") in FINAL_RUN_STATES - {"SUCCEEDED"}:
        stderr().print(failure_summary(run), markup=False)


@runs_app.command("cancel")
@api_command
def runs_cancel(
    run_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Cancel a queued or running run."""
    with client() as api:
        run = api.cancel_run(run_id)
    if as_json:
        emit_json(run)
    else:
        sys.stdout.write(f"run {run_id}: {run.get('state')}\n")


@runs_app.command("output")
@api_command
def runs_output(
    run_id: Annotated[int, typer.Argument(metavar="ID")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Default: run-ID.output.ipynb."),
    ] = None,
    html: Annotated[bool, typer.Option("--html", help="The rendered HTML instead.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Download a run's output notebook (or its HTML)."""
    kind = "html" if html else "ipynb"
    dest = output or Path(f"run-{run_id}.output.{kind}")
    with client() as api:
        size = api.download_output(run_id, dest, kind=kind)
    if as_json:
        emit_json({"run": run_id, "path": str(dest), "bytes": size})
    else:
        sys.stdout.write(f"{dest}\n")


@runs_app.command("compare")
@api_command
def runs_compare(
    a: Annotated[int, typer.Argument(metavar="A", help="Run A, e.g. the last success.")],
    b: Annotated[int, typer.Argument(metavar="B", help="Run B, e.g. a failure.")],
    as_json: JsonFlag = False,
) -> None:
    """Compare two runs: parameters, notebook version, and the cells that changed."""
    with client() as api:
        data = api.call("GET", f"/api/runs/{a}/compare/{b}/")
    if as_json:
        emit_json(data)
    else:
        sys.stdout.write(format_comparison(data))


# --- backfills and sweeps ---------------------------------------------------------------------


ConcurrencyOption = Annotated[
    int | None,
    typer.Option("--concurrency", min=1, help="Runs at a time (default: the portal's, 2)."),
]
GroupWaitOption = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Wait until no run is queued or running, showing the progress; exit 1 unless "
        "every run succeeded.",
    ),
]
GROUP_COLUMNS = ["id", "job", "kind", "created_at", "progress"]


def _instant(value: str, flag: str) -> str:
    """``value`` as typed, once it reads as an ISO 8601 date and time (the portal reads a
    value without an offset as a wall time in the job's time zone)."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date and time, e.g. 2026-10-24T00:00", param_hint=flag
        ) from None
    return value


def _parsed(parse: Callable[[], R]) -> R:
    """``parse()``, its ValueError as a usage error of ``-p`` (exit 2, no request)."""
    try:
        return parse()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="-p") from None


def follow_group(api: PortalClient, group: dict[str, Any]) -> dict[str, Any]:
    """Poll the group every GROUP_POLL_SECONDS, printing its progress line on stderr each
    time it changes, until none of its runs is queued or running; return its last state.
    Ctrl-C stops watching (exit 130), not the runs."""
    err = stderr()
    shown = ""
    try:
        while True:
            line = headline(group)
            if line != shown:
                err.print(line, markup=False)
                shown = line
            if not is_active(group):
                return group
            api.sleep(GROUP_POLL_SECONDS)
            group = api.group(group["id"])
    except KeyboardInterrupt:
        fail(
            f"stopped watching; group {group['id']} goes on "
            f"(`portalctl groups cancel {group['id']}` stops it)",
            code=130,
        )


def emit_group(group: dict[str, Any]) -> None:
    """The group's progress line, then a table of the newest run of each slot or
    combination, on stdout."""
    sys.stdout.write(headline(group) + "\n")
    rows, columns = run_rows(group)
    emit_table(rows, columns)


def _started(api: PortalClient, group: dict[str, Any], wait: bool, as_json: bool) -> None:
    """Report a group just started; with ``wait``, follow it and exit 1 unless every one
    of its items succeeded (the failed runs named on stderr)."""
    total = (group.get("progress") or {}).get("total", 0)
    skipped = group.get("skipped_slots") or 0
    note = f", {skipped} slots with a run skipped" if skipped else ""
    page = api.config.url + (group.get("web_url") or f"/groups/{group['id']}/")
    stderr().print(f"{group['kind']} {group['id']}: {total} runs{note}: {page}", markup=False)
    if not wait:
        if as_json:
            emit_json(group)
        else:
            sys.stdout.write(f"{group['id']}\n")
        return
    _settled(follow_group(api, group), as_json)


def _settled(group: dict[str, Any], as_json: bool) -> None:
    """Print a group that has no active run any more; exit 1 unless all succeeded."""
    if as_json:
        emit_json(group)
    else:
        emit_group(group)
    unsuccessful = [r for r in group.get("runs") or [] if r.get("state") != "SUCCEEDED"]
    if unsuccessful:
        listed = ", ".join(f"run {r.get('id')} {r.get('state')}" for r in unsuccessful[:10])
        more = f" and {len(unsuccessful) - 10} more" if len(unsuccessful) > 10 else ""
        fail(
            f"group {group['id']}: {len(unsuccessful)} did not succeed ({listed}{more}); "
            f"`portalctl groups retry {group['id']}` retries the failed ones",
            code=EXIT_NOT_SUCCEEDED,
        )


@jobs_app.command("backfill", no_args_is_help=True)
@api_command
def jobs_backfill(
    job_id: Annotated[int, typer.Argument(metavar="JOB", help="The job's id.")],
    start: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="WHEN",
            help="Start of the range, ISO 8601 (2026-10-24T00:00); without an offset, a wall "
            "time in the job's time zone.",
        ),
    ],
    end: Annotated[
        str,
        typer.Option("--to", metavar="WHEN", help="End of the range (included), likewise."),
    ],
    parameter: Annotated[
        list[str] | None,
        typer.Option(
            "-p",
            "--parameter",
            metavar="NAME=VALUE",
            help="A value overriding the job's for every run (repeatable); the portal converts "
            "VALUE to the parameter's type.",
        ),
    ] = None,
    concurrency: ConcurrencyOption = None,
    rerun_existing: Annotated[
        bool,
        typer.Option(
            "--rerun-existing",
            help="Give slots that already have a run a backfill re-run (default: skip them).",
        ),
    ] = False,
    wait: GroupWaitOption = False,
    as_json: JsonFlag = False,
) -> None:
    """Backfill a scheduled job: one run per slot of its schedule from --from to --to.

    Prints the group's id (with --json, the group). Exit status: 0 when it started (with
    --wait: when every run succeeded); 1 when a waited-for run did not succeed; 2 on
    any other error (the API's message is printed), and then nothing was started.
    """
    body: dict[str, Any] = {
        "start": _instant(start, "--from"),
        "end": _instant(end, "--to"),
        "parameters": _parsed(lambda: parse_assignments(parameter or [])),
        "rerun_existing": rerun_existing,
    }
    if concurrency is not None:
        body["max_concurrent"] = concurrency
    with client() as api:
        _started(api, api.backfill(job_id, body), wait, as_json)


@jobs_app.command("sweep", no_args_is_help=True)
@api_command
def jobs_sweep(
    job_id: Annotated[int, typer.Argument(metavar="JOB", help="The job's id.")],
    parameter: Annotated[
        list[str],
        typer.Option(
            "-p",
            "--parameter",
            metavar="NAME=V1,V2,...",
            help="A swept parameter and its values (repeatable): comma-separated, or a JSON "
            "list; each read as JSON where it parses, else as text.",
        ),
    ],
    zip_values: Annotated[
        bool,
        typer.Option("--zip", help="Run the i-th values together (default: every combination)."),
    ] = False,
    concurrency: ConcurrencyOption = None,
    wait: GroupWaitOption = False,
    as_json: JsonFlag = False,
) -> None:
    """Sweep a job's parameters: one run per combination of the values given.

    Prints the group's id (with --json, the group). Exit status as for backfill.
    """
    _parsed(lambda: parse_axes(parameter))  # usage errors before any request
    with client() as api:
        try:
            text_names = text_parameters(api.versions(job_id))
        except ApiError:
            text_names = set()  # e.g. a token without read: the portal checks the values
        body: dict[str, Any] = {
            "parameters": _parsed(lambda: parse_axes(parameter, text_names)),
            "combine": "zip" if zip_values else "grid",
        }
        if concurrency is not None:
            body["max_concurrent"] = concurrency
        _started(api, api.sweep(job_id, body), wait, as_json)


@groups_app.command("list")
@api_command
def groups_list(
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List backfills and sweeps of the jobs you may see, newest first."""
    with client() as api:
        rows = api.groups(limit=limit)
    if as_json:
        emit_json(rows)
    else:
        emit_table(list_rows(rows), GROUP_COLUMNS)


@groups_app.command("show")
@api_command
def groups_show(
    group_id: Annotated[int, typer.Argument(metavar="ID")],
    wait: GroupWaitOption = False,
    as_json: JsonFlag = False,
) -> None:
    """Show a backfill or sweep: its progress and the newest run of each slot or
    combination."""
    with client() as api:
        group = api.group(group_id)
        if wait:
            _settled(follow_group(api, group), as_json)
            return
    if as_json:
        emit_json(group)
    else:
        emit_group(group)


@groups_app.command("cancel")
@api_command
def groups_cancel(
    group_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Cancel every queued or running run of a group (a running one stops within a
    heartbeat)."""
    with client() as api:
        group = api.cancel_group(group_id)
    if as_json:
        emit_json(group)
    else:
        sys.stdout.write(headline(group) + "\n")


@groups_app.command("retry")
@api_command
def groups_retry(
    group_id: Annotated[int, typer.Argument(metavar="ID")],
    wait: GroupWaitOption = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a new run for each slot or combination whose newest run failed."""
    with client() as api:
        group = api.retry_group(group_id)
        if wait:
            _settled(follow_group(api, group), as_json)
            return
    if as_json:
        emit_json(group)
    else:
        sys.stdout.write(headline(group) + "\n")


# --- clusters ---------------------------------------------------------------------------------


CLUSTER_COLUMNS = ["id", "name", "backend", "size", "state", "expires_at"]


@clusters_app.command("launch")
@api_command
def clusters_launch(
    workers: Annotated[int, typer.Option("--workers", min=1, help="Number of workers.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Default: a free name the portal picks.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="local or emr; default: the site's first.")
    ] = None,
    lifetime_hours: Annotated[
        int | None, typer.Option("--lifetime-hours", min=1, help="Default: the site's.")
    ] = None,
    release: Annotated[str | None, typer.Option("--release", help="EMR release label.")] = None,
    ssh_key: Annotated[int | None, typer.Option("--ssh-key", help="SSH key id (EMR).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is READY.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Launch a Spark cluster; with --wait, exit 0 once it is READY, 1 if it is not."""
    spec = {
        "size": workers,
        "name": name,
        "backend": backend,
        "lifetime_hours": lifetime_hours,
        "release": release,
        "ssh_key": ssh_key,
    }
    with client() as api:
        cluster = api.launch_cluster({k: v for k, v in spec.items() if v is not None})
        err = stderr()
        err.print(f"cluster {cluster['id']} ({cluster.get('name')}) {cluster.get('state')}")
        if wait:
            last = cluster.get("state")
            while cluster.get("state") not in SETTLED_CLUSTER_STATES:
                api.sleep(CLUSTER_POLL_SECONDS)
                cluster = api.cluster(cluster["id"])
                if cluster.get("state") != last:
                    last = cluster.get("state")
                    err.print(f"cluster {cluster['id']} {last}")
    if as_json:
        emit_json(cluster)
    else:
        emit_fields(cluster)
    if wait and cluster.get("state") != "READY":
        fail(
            f"cluster {cluster['id']} {cluster.get('state')}: {cluster.get('state_reason') or ''}",
            code=EXIT_NOT_SUCCEEDED,
        )


@clusters_app.command("list")
@api_command
def clusters_list(as_json: JsonFlag = False) -> None:
    """List your clusters (staff: everyone's), newest first."""
    with client() as api:
        rows = api.clusters()
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, CLUSTER_COLUMNS)


@clusters_app.command("terminate")
@api_command
def clusters_terminate(
    cluster_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Terminate a cluster (it stops in the background)."""
    with client() as api:
        cluster = api.terminate_cluster(cluster_id)
    if as_json:
        emit_json(cluster)
    else:
        sys.stdout.write(f"cluster {cluster_id}: {cluster.get('state')}\n")


def gateway_ca_path(gateway_url: str) -> Path:
    """Where ``clusters connect`` keeps the self-signed certificate of the gateway of
    ``gateway_url``: beside the configuration, one file per gateway host."""
    host = urlsplit(gateway_url.replace("sc://", "https://", 1)).hostname or "gateway"
    return settings.config_path().parent / "gateway-ca" / f"{host}.pem"


def connect_environment(cluster: dict[str, Any]) -> dict[str, str]:
    """The environment a local pyspark needs for ``cluster`` (an API cluster): SPARK_REMOTE,
    plus GRPC_DEFAULT_SSL_ROOTS_FILE_PATH for a self-signed gateway, whose certificate is
    saved (mode 0644, directory 0700) where that variable points. Exits 1 if the cluster
    is not reachable through the gateway (not READY, not local, or no right to connect)."""
    access = cluster.get("access") or {}
    url = access.get("gateway_url")
    if not url:
        state = cluster.get("state")
        why = (
            "it is not READY"
            if state != "READY"
            else "only a local cluster's owner may connect, with a token of the clusters scope"
        )
        fail(f"cluster {cluster.get('name')} ({state}): {why}", code=EXIT_NOT_SUCCEEDED)
    env = {"SPARK_REMOTE": url}
    pem = access.get("gateway_ca_pem")
    if pem:
        path = gateway_ca_path(url)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(pem)
        env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(path)
    return env


@clusters_app.command("connect")
@api_command
def clusters_connect(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Write the environment here (mode 0600) instead."),
    ] = None,
) -> None:
    """Print the environment a local pyspark needs to reach your cluster NAME through the
    portal's Spark Connect gateway: eval "$(portalctl clusters connect NAME)", then
    pyspark --remote "$SPARK_REMOTE". The string holds the cluster's token."""
    with client() as api:
        cluster = api.cluster_named(name)
    env = connect_environment(cluster)
    text = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    if file is None:
        sys.stdout.write(text)
        return
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    stderr().print(f"wrote {file}")


def main() -> None:
    """The console script's entry point."""
    app(prog_name="portalctl")
