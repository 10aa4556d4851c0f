"""``manage.py backfill JOB_ID --from WHEN --to WHEN [--param NAME=VALUE]... [--concurrency N]
[--rerun-existing] [--as USER]``

Starts a backfill of a scheduled job (``jobs.services.groups.create_backfill``): one run
per slot of its schedule in the range, both ends included. WHEN is ISO 8601; without an
offset it is a wall time in the job's time zone. The group is started by ``--as`` (default:
the job's owner), who must own the job or be staff, and whose limits apply. Prints the
group's id, its number of runs and its page; any refusal is a CommandError with the
service's message, and then nothing was created.
"""

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from jobs.management.commands.sweep import acting_user, get_job, group_errors, report
from jobs.services import groups
from portalctl.groups import parse_assignments


def instant(value: str, option: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{option} {value!r} is not an ISO 8601 date and time, e.g. 2026-10-24T00:00."
        ) from None


class Command(BaseCommand):
    help = "Start a backfill of a scheduled job: one run per slot of its schedule in a range."

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int, help="The job's id.")
        parser.add_argument(
            "--from",
            dest="start",
            required=True,
            metavar="WHEN",
            help="Start of the range, ISO 8601; without an offset, in the job's time zone.",
        )
        parser.add_argument(
            "--to", dest="end", required=True, metavar="WHEN", help="End (included), likewise."
        )
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A value overriding the job's for every run (repeatable).",
        )
        parser.add_argument("--concurrency", type=int, default=2, help="Runs at a time.")
        parser.add_argument(
            "--rerun-existing",
            action="store_true",
            help="Give slots that already have a run a backfill re-run (default: skip them).",
        )
        parser.add_argument(
            "--as", dest="as_user", metavar="USER", help="Username or e-mail (default: owner)."
        )

    def handle(self, *args, **options):
        start = instant(options["start"], "--from")
        end = instant(options["end"], "--to")
        try:
            parameters = parse_assignments(options["param"])
        except ValueError as exc:
            raise CommandError(f"--param {exc}") from None
        job = get_job(options["job_id"])
        user = acting_user(job, options["as_user"])
        with group_errors():
            group = groups.create_backfill(
                job,
                user,
                start,
                end,
                parameters=parameters,
                max_concurrent=options["concurrency"],
                rerun_existing=options["rerun_existing"],
            )
        report(self.stdout, group)
