"""``manage.py sweep JOB_ID --param NAME=V1,V2,... [--zip] [--concurrency N] [--as USER]``

Starts a parameter sweep of a job (``jobs.services.groups.create_sweep``): one run per
combination of the values given, every combination or, with ``--zip``, the i-th values
together. Values are read as ``portalctl jobs sweep`` reads them (``portalctl.groups``):
comma-separated or a JSON list, each JSON where it parses, text for a text or date
parameter. The group is started by ``--as`` (default: the job's owner), who must own the
job or be staff. Prints the group's id, its number of runs and its page; any refusal is a
CommandError with the service's message, and then nothing was created.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from jobs import notebooks
from jobs.management.commands.runnotebook import find_user
from jobs.models import Job, RunGroup
from jobs.services import groups
from portalctl.groups import TEXT_TYPES, parse_axes
from quotas.limits import LimitExceeded


def get_job(job_id: int) -> Job:
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    if job is None:
        raise CommandError(f"No job {job_id}.")
    return job


def acting_user(job: Job, name: str | None) -> Any:
    """The user the group is started by: ``name``'s, else the job's owner. Raises
    CommandError for an unknown user, or one who may not start the job's runs."""
    if not name:
        return job.owner
    user = find_user(name)
    if user.pk != job.owner_id and not user.is_staff:
        raise CommandError(
            f"{user.username} may not start runs of job {job.pk} (its owner: "
            f"{job.owner.username}); give its owner or a staff account."
        )
    return user


@contextmanager
def group_errors() -> Iterator[None]:
    """The service's refusals as a CommandError with its message."""
    try:
        yield
    except (groups.GroupError, notebooks.ParameterError) as exc:
        raise CommandError(str(exc)) from None
    except LimitExceeded as exc:
        raise CommandError(exc.message) from None


def report(out: OutputWrapper, group: RunGroup) -> None:
    """The group's id, its number of runs and its page."""
    count = group.runs.count()
    skipped = f" ({group.skipped_slots} slots with a run skipped)" if group.skipped_slots else ""
    out.write(f"{group.kind} {group.pk} of job {group.job_id}: {count} runs{skipped}")
    out.write(f"page: {group.get_absolute_url()}")


class Command(BaseCommand):
    help = "Start a parameter sweep of a job: one run per combination of the values given."

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int, help="The job's id.")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=V1,V2,...",
            help="A swept parameter and its values (repeatable).",
        )
        parser.add_argument(
            "--zip", action="store_true", help="Run the i-th values together (default: grid)."
        )
        parser.add_argument("--concurrency", type=int, default=2, help="Runs at a time.")
        parser.add_argument(
            "--as", dest="as_user", metavar="USER", help="Username or e-mail (default: owner)."
        )

    def handle(self, *args, **options):
        if not options["param"]:
            raise CommandError("Give at least one --param NAME=V1,V2,...")
        job = get_job(options["job_id"])
        user = acting_user(job, options["as_user"])
        schema = job.latest_version().parameter_schema or {}
        text_names = {n for n, spec in schema.items() if spec.get("type") in TEXT_TYPES}
        try:
            axes = parse_axes(options["param"], text_names)
        except ValueError as exc:
            raise CommandError(f"--param {exc}") from None
        combine = RunGroup.Combine.ZIP if options["zip"] else RunGroup.Combine.GRID
        with group_errors():
            group = groups.create_sweep(
                job, user, axes, combine=combine, max_concurrent=options["concurrency"]
            )
        report(self.stdout, group)
