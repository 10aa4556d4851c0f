"""Template helpers that say how long run outputs are kept (``jobs.services.retention``)."""

from django import template
from django.conf import settings

from jobs.models import Job
from jobs.services.retention import retention_days

register = template.Library()


def _days(days: int) -> str:
    return "forever" if days == 0 else f"{days} day{'' if days == 1 else 's'}"


@register.simple_tag
def default_output_retention() -> str:
    """The portal's default retention in words: "90 days", or "forever" when
    RUN_OUTPUT_RETENTION_DAYS is 0."""
    return _days(settings.RUN_OUTPUT_RETENTION_DAYS)


@register.filter
def output_retention(job: Job) -> str:
    """How long ``job``'s run outputs are kept after each run ends, in words: "7 days",
    "forever", or "90 days (the portal's default)" when the job leaves it to the portal."""
    words = _days(retention_days(job))
    return words if job.output_retention_days is not None else f"{words} (the portal's default)"
