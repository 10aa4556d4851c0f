"""``manage.py installkernel``: write the portal's notebook kernelspec (see jobs.kernel)."""

from django.core.management.base import BaseCommand

from jobs.kernel import ensure_kernelspec


class Command(BaseCommand):
    help = "Install (or refresh) the portal's PySpark kernelspec in this virtual environment."

    def handle(self, *args, **options):
        path = ensure_kernelspec()
        self.stdout.write(f"Kernelspec written to {path}")
