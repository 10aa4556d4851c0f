"""Celery tasks of budgets: thin wrappers around quotas.usage (on the "control" queue)."""

import logging

from celery import shared_task

from portal.mail import MAIL_TASK_OPTIONS
from quotas import usage

log = logging.getLogger(__name__)


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def warn_budgets() -> int:
    """Enqueue the budget warnings now due for every user whose clusters ran this month;
    beat, every BUDGET_CHECK_INTERVAL s. Returns how many were enqueued."""
    count = usage.warn_all_budgets()
    if count:
        log.info("budget warnings enqueued: %s", count)
    return count


@shared_task(**MAIL_TASK_OPTIONS)
def send_budget_warning(user_id: int, budget: str) -> bool:
    """E-mail a user at BUDGET_WARNING_PERCENT of a budget, once a month; retried on
    mail-server errors."""
    return usage.send_budget_warning(user_id, budget)
