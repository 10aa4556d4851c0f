"""``manage.py compareruns A B``: compare two runs as the portal's page does (operators'
access: any runs), printing the summary of ``portalctl runs compare`` or its JSON."""

import json

from django.core.management.base import BaseCommand, CommandError

from jobs import compare
from jobs.models import Run
from portalctl.compare import format_comparison


class Command(BaseCommand):
    help = "Compare two runs: parameters, notebook version and the cells that changed."

    def add_arguments(self, parser):
        parser.add_argument("a", type=int, help="Run A's id (e.g. the last success).")
        parser.add_argument("b", type=int, help="Run B's id (e.g. a failure).")
        parser.add_argument("--json", action="store_true", help="Print the API's JSON.")

    def handle(self, *args, **options):
        runs = Run.objects.select_related("job", "version").in_bulk([options["a"], options["b"]])
        missing = [str(pk) for pk in (options["a"], options["b"]) if pk not in runs]
        if missing:
            raise CommandError(f"No run {', '.join(missing)}.")
        data = compare.summary(compare.compare_runs(runs[options["a"]], runs[options["b"]]))
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            self.stdout.write(format_comparison(data), ending="")
