"""Record whether each notebook version has a ``parameters`` cell.

Versions stored before have their notebook read once: only those without declared
parameters can lack the cell. A notebook that cannot be read keeps True, the old rule
(only declared parameters are taken).
"""

import json

from django.core.files.storage import default_storage
from django.db import migrations, models


def _has_parameters_cell(key):
    try:
        with default_storage.open(key, "rb") as f:
            nb = json.load(f)
        return any(
            "parameters" in ((cell.get("metadata") or {}).get("tags") or [])
            for cell in nb.get("cells", [])
        )
    except Exception:  # missing or unreadable: keep the old rule
        return True


def fill(apps, schema_editor):
    NotebookVersion = apps.get_model("jobs", "NotebookVersion")
    versions = NotebookVersion.objects.only("pk", "storage_key", "parameter_schema")
    for version in versions.iterator():
        if not version.parameter_schema and not _has_parameters_cell(version.storage_key):
            NotebookVersion.objects.filter(pk=version.pk).update(has_parameters_cell=False)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0009_run_gzip_copies"),
    ]

    operations = [
        migrations.AddField(
            model_name="notebookversion",
            name="has_parameters_cell",
            field=models.BooleanField(
                default=True,
                help_text=(
                    "Whether a cell is tagged 'parameters'. Without one, runs take any "
                    "parameters and papermill injects them at the top of the notebook."
                ),
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
