"""Job.stream_key: the random name of a continuous job's S3 prefix on EMR.

A callable default is evaluated once for the rows an AddField fills, so every existing
job would share one key: each gets its own before the column takes its final form."""

import uuid

from django.db import migrations, models


def give_each_job_its_key(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    for job in Job.objects.only("pk").iterator():
        Job.objects.filter(pk=job.pk).update(stream_key=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0012_run_stream_progress"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="stream_key",
            field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(give_each_job_its_key, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="job",
            name="stream_key",
            field=models.UUIDField(
                default=uuid.uuid4,
                editable=False,
                unique=True,
                help_text="Continuous job on EMR: the random name of its S3 prefix of "
                "checkpoints and sinks (``Job.stream_s3_prefix``), which no other job's "
                "cluster can guess.",
            ),
        ),
    ]
