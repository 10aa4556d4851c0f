"""``manage.py sparkhistory``: run the Spark History Server of the runs' history views."""

import logging

from django.core.management.base import BaseCommand, CommandError

from jobs import history_server
from portal.sandbox import SandboxUnavailable


class Command(BaseCommand):
    help = (
        "Run the Spark History Server (in its sandbox) that serves the Spark history of "
        "finished runs, until stopped."
    )

    def handle(self, *args, **options):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        try:
            code = history_server.run_forever()
        except (SandboxUnavailable, OSError) as exc:
            raise CommandError(f"The Spark History Server cannot start: {exc}") from exc
        if code:
            raise CommandError(f"The Spark History Server exited with status {code}.")
