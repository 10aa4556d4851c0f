"""Celery tasks of the API: forgetting old Idempotency-Keys."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from api.models import IdempotencyKey


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def forget_idempotency_keys() -> int:
    """Delete the Idempotency-Keys older than IDEMPOTENCY_KEY_HOURS (they no longer
    deduplicate anything); beat, hourly. Returns how many were deleted."""
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lte=cutoff).delete()
    return deleted
