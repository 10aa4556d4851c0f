"""Per-user overrides of the fair-share limits, and the budget notices already sent."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

#: django-ratelimit's rate syntax: COUNT/[MULTIPLIER]PERIOD, e.g. "20/m" or "100/2h".
RATE_RE = re.compile(r"^\d+/\d*[smhd]$")


def validate_rates(value: object) -> None:
    """A ``rates`` override: ``{action: "COUNT/PERIOD"}`` for actions of RATE_LIMITS.
    Raises ValidationError naming the first bad key or value."""
    if not isinstance(value, dict):
        raise ValidationError('Give an object such as {"run_now": "60/m"}.')
    for action, rate in value.items():
        if action not in settings.RATE_LIMITS:
            known = ", ".join(sorted(settings.RATE_LIMITS))
            raise ValidationError(f"Unknown action {action!r}: use one of {known}.")
        if not isinstance(rate, str) or not RATE_RE.match(rate):
            raise ValidationError(
                f'Rate {rate!r} of {action!r} is not COUNT/PERIOD, e.g. "20/m" or "100/2h".'
            )


class UserLimits(models.Model):
    """One user's overrides of the per-user limits and budgets (settings ``USER_*``).

    A field left empty takes the setting's default for a non-staff user, and means "no
    limit" for staff; 0 means "no limit" for anyone.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="limits",
        help_text="Whose limits these are.",
    )
    max_jobs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs the user may own (default USER_MAX_JOBS)."
    )
    max_active_runs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Runs queued or running at once (default USER_MAX_ACTIVE_RUNS).",
    )
    max_running_runs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Runs executing at the same time (default USER_MAX_RUNNING_RUNS).",
    )
    min_schedule_interval = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Shortest time between two slots of a schedule, in seconds "
        "(default USER_MIN_SCHEDULE_INTERVAL).",
    )
    catchup_max_slots = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Missed slots a job catches up per dispatcher pass "
        "(default USER_CATCHUP_MAX_SLOTS).",
    )
    monthly_node_hours = models.FloatField(
        null=True,
        blank=True,
        help_text="Node-hours of clusters per calendar month (default USER_MONTHLY_NODE_HOURS).",
    )
    monthly_cost = models.FloatField(
        null=True,
        blank=True,
        help_text="Estimated cluster cost per calendar month (default USER_MONTHLY_COST).",
    )
    rates = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_rates],
        help_text='Rate limits by action, e.g. {"run_now": "60/m"} (default RATE_LIMITS).',
    )
    note = models.CharField(max_length=300, blank=True, help_text="Why, for other admins.")
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change (UTC).")

    class Meta:
        verbose_name = "user limits"
        verbose_name_plural = "user limits"

    def __str__(self) -> str:
        return f"Limits of {self.user}"


class BudgetNotice(models.Model):
    """A budget warning already e-mailed: at most one per user, month and budget."""

    class Budget(models.TextChoices):
        NODE_HOURS = "node_hours", "node-hours"
        COST = "cost", "cost"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget_notices"
    )
    month = models.DateField(help_text="First day of the month the notice is about (UTC).")
    budget = models.CharField(max_length=20, choices=Budget.choices)
    percent = models.PositiveSmallIntegerField(help_text="Share of the budget used when sent.")
    sent_at = models.DateTimeField(auto_now_add=True, help_text="When it was sent (UTC).")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "month", "budget"], name="one_budget_notice_per_month"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.month:%Y-%m} {self.budget} {self.percent}%"
