"""``{% group_section job %}``: the job page's backfills and sweeps, newest first."""

from django import template

from jobs.services import groups

register = template.Library()

#: Groups listed on a job's page, newest first.
LISTED = 10


@register.inclusion_tag("jobs/_job_groups.html")
def group_section(job):
    """The newest LISTED backfills and sweeps of ``job`` with their progress."""
    listed = list(job.groups.select_related("created_by")[:LISTED])
    return {"rows": [(group, groups.progress(group)) for group in listed]}
