"""Values a run's notebook recorded with scrapbook's ``glue``, typed and bounded
(recorded.extract reads them from the output notebook as the run ends)."""

from django.db import models


class RecordedValueQuerySet(models.QuerySet):
    def visible_to(self, user) -> "RecordedValueQuerySet":
        """The values of runs whose job ``user`` may see (``Job.objects.visible_to``)."""
        from jobs.models import Job

        return self.filter(run__job__in=Job.objects.visible_to(user))

    def numbers_of_job(self, job) -> "RecordedValueQuerySet":
        """The numeric values of ``job``'s runs (a number of None is not one)."""
        return self.filter(run__job=job, kind=RecordedValue.Kind.NUMBER, number__isnull=False)


class RecordedValue(models.Model):
    """One named value of one run: the last ``glue`` of that name in the notebook.

    Exactly one of ``number``, ``text`` and ``data`` carries the value, by ``kind``:
    NUMBER in ``number`` (finite floats only), TEXT in ``text``, TABLE in ``data`` as
    ``{"columns": [...], "rows": [[...], ...]}``, FIGURE in ``data`` as the Plotly JSON
    (``{"data": [...], "layout": {...}}``, or None when it passed the size bound), OTHER
    (booleans, lists, dicts, non-finite numbers) in ``data`` or ``text``.
    """

    class Kind(models.TextChoices):
        NUMBER = "number", "Number"
        TEXT = "text", "Text"
        TABLE = "table", "Table"
        FIGURE = "figure", "Figure"
        OTHER = "other", "Other"

    run = models.ForeignKey(
        "jobs.Run",
        on_delete=models.CASCADE,
        related_name="recorded_values",
        help_text="The run whose output notebook recorded the value.",
    )
    name = models.CharField(
        max_length=200, help_text="The name given to glue (cut to RECORDED_NAME_MAX_CHARS)."
    )
    kind = models.CharField(
        max_length=10, choices=Kind.choices, help_text="How the value is stored and shown."
    )
    number = models.FloatField(null=True, blank=True, help_text="A number's value.")
    text = models.TextField(
        blank=True, help_text="A string's value, cut to RECORDED_TEXT_MAX_CHARS characters."
    )
    data = models.JSONField(
        null=True,
        blank=True,
        help_text="A table ({columns, rows}), a figure's Plotly JSON or other JSON, bounded.",
    )
    note = models.CharField(
        max_length=300, blank=True, help_text="What a bound cut or dropped, for the reader."
    )
    position = models.PositiveIntegerField(
        default=0, help_text="Order of first appearance in the notebook (0 first)."
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was extracted.")

    objects = RecordedValueQuerySet.as_manager()

    class Meta:
        ordering = ["run", "position", "name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="recorded_value_unique_name")
        ]
        indexes = [models.Index(fields=["kind", "name"])]

    def __str__(self) -> str:
        return f"{self.name} of run {self.run_id}"
