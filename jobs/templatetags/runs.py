"""Template filters for runs."""

from django import template

from jobs.models import Run

register = template.Library()


@register.filter
def state_label(value: str) -> str:
    """A run state's label as users read it everywhere ("SUCCEEDED" -> "Succeeded");
    an unknown value comes back unchanged."""
    try:
        return Run.State(value).label
    except ValueError:
        return value
