"""``manage.py runnotebook PATH [-p NAME VALUE]... [--owner USER] [--wait | --inline] [--json]``

Runs a notebook through the portal's own executor and prints the outcome. The notebook
becomes (or updates) a manual job named after its file, owned by ``--owner`` (default: a
system account created on demand), so the run is visible in the portal like any other.

- ``--inline`` (the default) executes in this process: no worker, Redis or beat needed.
- ``--wait`` enqueues the run and waits for a worker to finish it.

``-p`` values are parsed as papermill's own CLI parses them (papermill.cli._resolve_type:
True/False/None, then int, then float, else the string); a value for a parameter the
notebook declares as text is kept as the text typed. A notebook without a ``parameters``
cell takes any names, injected at the top as papermill injects them; one with the cell
takes only its own. The exit status is 0 only when the run SUCCEEDED.
"""

import json
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError
from papermill.cli import _resolve_type

from jobs import notebooks, services
from jobs.models import Run
from quotas.limits import LimitExceeded

SYSTEM_USERNAME = "portal-cli"


def system_user():
    """The account that owns command-line runs when no --owner is given."""
    user, created = get_user_model().objects.get_or_create(
        username=SYSTEM_USERNAME, defaults={"email": "", "first_name": "Command line"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def find_user(name: str):
    User = get_user_model()
    user = (
        User.objects.filter(username=name).first()
        or User.objects.filter(email__iexact=name).first()
    )
    if user is None:
        raise CommandError(f"No user {name!r} (give a username or an e-mail address).")
    return user


class Command(BaseCommand):
    help = "Run a notebook through the portal's executor and print the outcome."

    def add_arguments(self, parser):
        parser.add_argument("path", help="Path of the .ipynb file.")
        parser.add_argument(
            "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
        )
        parser.add_argument(
            "--owner", help="Username or e-mail of the job's owner (default: a system account)."
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--inline", action="store_true", help="Execute in this process (the default)."
        )
        mode.add_argument(
            "--wait", action="store_true", help="Enqueue for a worker and wait for the outcome."
        )
        parser.add_argument(
            "--timeout", type=int, default=3600, help="Run timeout in seconds (default 3600)."
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the outcome as one JSON object."
        )

    def handle(self, *args, **options):
        path = Path(options["path"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file.")
        data = path.read_bytes()
        try:
            parsed = notebooks.read_notebook(data)
            schema = parsed.parameter_schema
        except notebooks.NotebookError as exc:
            raise CommandError(f"{path}: {exc}") from None
        raw = {}
        for name, value in options["parameter"]:
            typed = _resolve_type(value)
            raw[name] = value if schema.get(name, {}).get("type") in ("str", "date") else typed
        owner = find_user(options["owner"]) if options["owner"] else system_user()
        try:
            values = notebooks.coerce_parameters(schema, raw, free=not parsed.has_parameters_cell)
        except notebooks.ParameterError as exc:
            raise CommandError(str(exc)) from None
        try:
            job = services.job_for_notebook(
                owner, parsed, path.name, timeout_seconds=options["timeout"]
            )
            run = services.run_now(
                job, owner, values, trigger=Run.Trigger.CLI, enqueue=options["wait"]
            )
        except LimitExceeded as exc:
            raise CommandError(exc.message) from None
        if options["wait"]:
            run = self._wait(run)
        else:
            run = services.execute_run(run.pk) or Run.objects.get(pk=run.pk)
        self._report(run, options["json"])
        if run.state != Run.State.SUCCEEDED:
            raise SystemExit(1)

    def _wait(self, run: Run) -> Run:
        deadline = time.monotonic() + run.timeout_seconds + 300
        shown = None
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.is_final:
                return run
            line = f"{run.state} cell {run.cells_done}/{run.cells_total}"
            if line != shown:
                self.stderr.write(line)
                shown = line
            time.sleep(0.5)
        raise CommandError(
            f"Run {run.pk} did not finish in time; is a worker running (queue 'runs')?"
        )

    def _report(self, run: Run, as_json: bool):
        def local(key):
            if not key:
                return None
            try:
                return default_storage.path(key)
            except NotImplementedError:  # remote storage (S3): the key is the address
                return key

        outcome = {
            "run_id": run.pk,
            "run_uuid": str(run.uuid),
            "job_id": run.job_id,
            "status": run.state,
            "attempt": run.attempt,
            "parameters": run.parameters,
            "failing_cell": run.error_cell_index,
            "exception": run.error_ename or None,
            "message": run.error_evalue or run.state_reason or None,
            "output_ipynb": local(run.output_key),
            "output_html": local(run.html_key),
            "url": settings.PORTAL_ORIGIN + run.get_absolute_url(),
        }
        if as_json:
            self.stdout.write(json.dumps(outcome))
            return
        self.stdout.write(f"run {run.pk} {run.state}")
        if run.error_ename:
            self.stdout.write(
                f"failing cell {run.error_cell_index}: {run.error_ename}: {run.error_evalue}"
            )
        elif run.state_reason and run.state != Run.State.SUCCEEDED:
            self.stdout.write(run.state_reason)
        for label in ("output_ipynb", "output_html"):
            if outcome[label]:
                self.stdout.write(f"{label}: {outcome[label]}")
