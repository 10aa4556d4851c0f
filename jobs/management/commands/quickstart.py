"""``manage.py quickstart``: a demo user, the sample telemetry data, and the example job.

Idempotent: a second call keeps the data and the job and only prints the sign-in details
again (with a new password, since the old one is not stored in clear). The example job
"Telemetry hello world" runs daily at 06:00 UTC and gets a first run at once; the other
example analyses in ``examples/`` are scheduled after it (their runs start at their slots).
The windowed-counts streaming example becomes a continuous job, paused: a new user presses
Resume on its page. Its input, the landing directory ``TELEMETRY_STREAM_ROOT``, is created
here; the generator that fills it is the Procfile's ``landing`` process (``bin/quickstart``
starts it with the others).
"""

import json
import secrets
from pathlib import Path

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from jobs import services
from jobs.models import Job
from telemetry import sample

EXAMPLES = Path(settings.BASE_DIR) / "examples"
DEMO_EMAIL = "demo@example.com"
#: (notebook in examples/, job name, description, cron in UTC). The first runs at once.
EXAMPLE_JOBS = [
    (
        "telemetry_hello_world.ipynb",
        "Telemetry hello world",
        "Operating-system distribution of a sample of Firefox-style telemetry pings, "
        "drawn with Plotly.",
        "0 6 * * *",
    ),
    (
        "hangs_by_last_frame.ipynb",
        "Hangs by last frame",
        "Main-thread hang stacks aggregated by their last frame; "
        "plugin hangs and hangs against session length.",
        "10 6 * * *",
    ),
    (
        "regression_detection.ipynb",
        "Regression detection",
        "Gaussian-mixture change detection on Talos-like performance series, "
        "compared with a single-Gaussian detector and scored against injected shifts.",
        "20 6 * * *",
    ),
    (
        "addon_recommender.ipynb",
        "Add-on recommender",
        "Implicit-feedback ALS over add-on installs, regularisation chosen by cross-validation.",
        "30 6 * * 1",
    ),
    (
        "histogram_rollups.ipynb",
        "Histogram roll-ups",
        "GC_MS and uptime histograms rolled up by dimension, with a day merged into the history.",
        "40 6 * * *",
    ),
    (
        "batch_view.ipynb",
        "Experiment batch view",
        "Raw JSON pings against the same content in Parquet, beside the source document: "
        "8.5x smaller, both uncompressed (document: up to 8x); the same query's speed-up "
        "is under 2x on 100,000 pings and passes 10x from about 3 million (13.8x at 4 "
        "million). Then an experiment's clients as a batch view.",
        "50 6 * * *",
    ),
]


#: (notebook in examples/, job name, description): continuous jobs, created paused.
CONTINUOUS_EXAMPLE_JOBS = [
    (
        "stream_windowed_counts.ipynb",
        "Windowed counts (streaming)",
        "Pings per OS in 10-minute windows sliding every 5 minutes, finalised by a watermark "
        "into a Parquet sink; reads the pings that the landing generator writes. Press Resume.",
    ),
]


class Command(BaseCommand):
    help = "Create the demo user, generate the sample pings and schedule the example job."

    def add_arguments(self, parser):
        parser.add_argument(
            "--password", help="Password for the demo user (default: a new random one)."
        )
        parser.add_argument(
            "--pings", type=int, default=100_000, help="Size of the sample (default 100000)."
        )
        parser.add_argument("--no-run", action="store_true", help="Do not start a first run.")

    def handle(self, *args, **options):
        password = options["password"] or secrets.token_urlsafe(9)
        user = self._demo_user(password)
        data_dir = Path(settings.DATA_DIR) / "sample" / "pings"
        marker = data_dir / sample.MARKER_NAME
        current = json.loads(marker.read_text()).get("format_version") if marker.exists() else None
        if current != sample.FORMAT_VERSION:
            self.stdout.write(f"Generating {options['pings']:,} sample pings into {data_dir} ...")
            summary = sample.generate(
                str(data_dir), pings=options["pings"], json_dir=str(data_dir.parent / "pings_json")
            )
            self.stdout.write(f"  {summary.get('rows', options['pings']):,} pings written.")
        # The Talos series gained their noise patterns (_series.json) without a new pings
        # format: regenerate them on their own when they predate it.
        talos_dir = data_dir.parent / "talos"
        if current != sample.FORMAT_VERSION or not (talos_dir / sample.TALOS_SERIES_NAME).exists():
            sample.generate_talos(str(talos_dir))
        for number, (filename, name, description, cron) in enumerate(EXAMPLE_JOBS):
            path = EXAMPLES / filename
            if not path.exists() or Job.objects.filter(owner=user, name=name).exists():
                continue
            spec = Job(
                name=name,
                description=description,
                schedule_kind=Job.ScheduleKind.CRON,
                cron=cron,
                timezone="UTC",
                timeout_seconds=1800,
                notify_on_failure=DEMO_EMAIL,
                visibility=Job.Visibility.SIGNED_IN,
            )
            job = services.create_job(user, spec, path.read_bytes(), filename)
            if number == 0 and not options["no_run"]:
                services.run_now(job, user)
                self.stdout.write(
                    f"Scheduled “{name}” ({job.schedule_description}); its first run starts now."
                )
            else:
                self.stdout.write(f"Scheduled “{name}” ({job.schedule_description}).")
        # Only the directory: the Procfile's landing process writes the pings, so that a
        # Resume before its first batch finds an empty stream rather than an error.
        Path(settings.TELEMETRY_STREAM_ROOT).mkdir(parents=True, exist_ok=True)
        for filename, name, description in CONTINUOUS_EXAMPLE_JOBS:
            path = EXAMPLES / filename
            if not path.exists() or Job.objects.filter(owner=user, name=name).exists():
                continue
            spec = Job(
                name=name,
                description=description,
                continuous=True,
                schedule_kind=Job.ScheduleKind.MANUAL,
                enabled=False,  # paused: nothing starts until the user presses Resume
                notify_on_failure=DEMO_EMAIL,
                visibility=Job.Visibility.SIGNED_IN,
            )
            services.create_job(user, spec, path.read_bytes(), filename)
            self.stdout.write(f"Created “{name}”, a continuous job, paused: press Resume.")
        self.stdout.write(
            self.style.SUCCESS(
                f"\nSign in at {settings.PORTAL_ORIGIN}/ as {DEMO_EMAIL} "
                f"with password: {password}\n"
            )
        )

    @transaction.atomic
    def _demo_user(self, password):
        User = get_user_model()
        user = User.objects.filter(email=DEMO_EMAIL).first() or User(
            username="demo", email=DEMO_EMAIL
        )
        user.set_password(password)
        user.is_staff = True
        user.is_superuser = True
        user.save()
        EmailAddress.objects.update_or_create(
            user=user, email=DEMO_EMAIL, defaults={"verified": True, "primary": True}
        )
        return user
