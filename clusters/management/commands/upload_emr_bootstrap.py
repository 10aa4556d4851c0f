"""``manage.py upload_emr_bootstrap``: put the EMR bootstrap scripts where clusters read
them, and the portal's ``telemetry`` package as a zip (``telemetry_zip``) that the papermill
bootstrap puts on the clusters' Python path."""

import io
import zipfile
from pathlib import Path

import boto3
from django.conf import settings
from django.core.management.base import BaseCommand

SCRIPTS = Path(__file__).resolve().parents[2] / "emr"
TELEMETRY = Path(__file__).resolve().parents[3] / "telemetry"


def telemetry_zip() -> bytes:
    """The ``telemetry`` package's Python files as a zip (``telemetry/...``), in a fixed
    order and with fixed times, so that the same sources give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(TELEMETRY.rglob("*.py")):
            name = path.relative_to(TELEMETRY.parent).as_posix()
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


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
        key = settings.EMR_TELEMETRY_KEY
        s3.put_object(
            Bucket=settings.EMR_BOOTSTRAP_BUCKET,
            Key=key,
            Body=telemetry_zip(),
            ContentType="application/zip",
        )
        self.stdout.write(f"Uploaded to s3://{settings.EMR_BOOTSTRAP_BUCKET}/{key}")
