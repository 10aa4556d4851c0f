"""``{% notification_section job %}``: the job page's targets and delivery log."""

from django import template
from django.db.models import Prefetch

from notify.models import Delivery, DeliveryAttempt

register = template.Library()

#: Deliveries shown in the log, newest first.
LOG_LENGTH = 20


@register.inclusion_tag("notify/_job_section.html", takes_context=True)
def notification_section(context, job):
    """The targets of ``job`` and its latest deliveries with every attempt, for who may
    change the job (its URLs hold tokens; its log shows receivers' errors); nothing for
    other viewers."""
    can_change = job.can_change(context["request"].user)
    if not can_change:
        return {"show": False}
    deliveries = (
        Delivery.objects.filter(job=job)
        .select_related("target", "run", "cluster")
        .prefetch_related(
            Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("number"))
        )[:LOG_LENGTH]
    )
    return {
        "show": True,
        "job": job,
        "targets": job.notification_targets.all(),
        "deliveries": deliveries,
    }
