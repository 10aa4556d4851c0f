"""The Celery application. Settings are the ``CELERY_*`` names in ``portal.settings``."""

import os

from celery import Celery, signals
from celery.worker.control import inspect_command

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_connections(sender=None, **_):
    """Treat a task as Django treats a request: before and after it, close the database
    connections that are broken or older than ``CONN_MAX_AGE`` (health-checked on next
    use with ``CONN_HEALTH_CHECKS``), keep the others.

    Celery's Django fix-up would otherwise close every connection before and after every
    task (``celery.fixups.django.DjangoWorkerFixup.close_database`` when
    ``CELERY_DB_REUSE_MAX`` is unset): a new PostgreSQL backend, forked and authenticated,
    for each claim and each dispatcher tick. Settings set ``CELERY_DB_REUSE_MAX`` so high
    that the fix-up leaves connections to this handler. An eager task (run inline by
    ``apply()``) is part of its caller's work and leaves the caller's connection alone.
    """
    from portal.db import close_stale_connections  # this module loads before Django is set up

    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_stale_connections()


@inspect_command()
def sandbox(state):
    """Whether this worker can start sandboxes: ``{"ok": True}``, ``{"ok": False,
    "reason": "..."}``, or ``{"ok": True, "off": True}`` when KERNEL_SANDBOX=none. Asked
    by the operations page (``app.control.broadcast("sandbox", reply=True)``), so staff
    see a worker that would fail every run before a user finds out."""
    from portal import sandbox as sandboxes  # as above: reads settings when imported

    if not sandboxes.enabled():
        return {"ok": True, "off": True}
    reason = sandboxes.unavailable_reason()
    return {"ok": reason is None, "reason": reason or ""}
