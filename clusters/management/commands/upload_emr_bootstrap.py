"""``manage.py upload_emr_bootstrap``: put the EMR bootstrap script where clusters read it."""

from pathlib import Path

import boto3
from django.conf import settings
from django.core.management.base import BaseCommand

SCRIPTS = Path(__file__).resolve().parents[2] / "emr"


class Command(BaseCommand):
    help = "Upload the EMR bootstrap scripts (clusters/emr/) to s3://EMR_BOOTSTRAP_BUCKET."

    def add_arguments(self, parser):
        parser.add_argument(
            "--endpoint-url", default=settings.EMR_ENDPOINT_URL or None, help="S3 endpoint (tests)."
        )

    def handle(self, *args, **options):
        s3 = boto3.client(
            "s3", region_name=settings.EMR_REGION, endpoint_url=options["endpoint_url"]
        )
        for name, key in (
            ("install-ssh-key.sh", settings.EMR_BOOTSTRAP_KEY),
            ("install-papermill.sh", settings.EMR_PAPERMILL_BOOTSTRAP_KEY),
        ):
            s3.put_object(
                Bucket=settings.EMR_BOOTSTRAP_BUCKET,
                Key=key,
                Body=(SCRIPTS / name).read_bytes(),
                ContentType="text/x-shellscript",
            )
            self.stdout.write(f"Uploaded to s3://{settings.EMR_BOOTSTRAP_BUCKET}/{key}")
