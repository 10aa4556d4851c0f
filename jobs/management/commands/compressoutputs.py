"""``manage.py compressoutputs``: make the gzip copies of runs stored before the portal made
them (``jobs.compression``), so that their pages and downloads go compressed too."""

from django.core.management.base import BaseCommand, CommandError

from jobs.services.execution import backfill_gzip_copies


class Command(BaseCommand):
    help = (
        "Store gzip copies of finished runs' HTML and .ipynb that have none (runs from "
        "before the copies existed), newest first. Safe to run while the portal runs, and "
        "again: a run that has its copies is skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--limit", type=int, default=0, help="At most this many runs, newest first (0: all)."
        )

    def handle(self, *args, **options):
        if options["limit"] < 0:
            raise CommandError("--limit must be 0 (all) or more.")
        counts = backfill_gzip_copies(options["limit"])
        self.stdout.write(
            f"{counts['runs']} runs looked at: {counts['copies']} gzip copies stored "
            f"({counts['bytes']:,} bytes); outputs too small or incompressible: "
            f"{counts['none']}; missing from storage: {counts['missing']}."
        )
