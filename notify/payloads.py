"""The JSON payload of notifications (docs/notifications.md; ``notify.schema`` describes it
in the OpenAPI schema), and the title and text chat messages get."""

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings

from clusters.models import Cluster
from jobs.models import Job, Run
from notify.models import Event

#: Payload format version; a breaking change of the payload gets a new one.
VERSION = 1


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _job(job: Job) -> dict[str, Any]:
    return {"id": job.pk, "name": job.name, "url": settings.PORTAL_ORIGIN + job.get_absolute_url()}


def _run(run: Run) -> dict[str, Any]:
    duration = run.duration
    error = None
    if run.is_failure:
        error = {
            "cell_index": run.error_cell_index,
            "ename": run.error_ename,
            "evalue": run.error_evalue[:1000],
        }
    return {
        "id": run.pk,
        "uuid": str(run.uuid),
        "state": run.state,
        "reason": run.state_reason,
        "trigger": run.trigger,
        "attempt": run.attempt,
        "scheduled_for": _iso(run.scheduled_for),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_seconds": round(duration.total_seconds(), 1) if duration else None,
        "url": settings.PORTAL_ORIGIN + run.get_absolute_url(),
        "error": error,
    }


def _cluster(cluster: Cluster) -> dict[str, Any]:
    return {
        "id": cluster.pk,
        "name": cluster.name,
        "state": cluster.state,
        "expires_at": _iso(cluster.expires_at),
        "url": settings.PORTAL_ORIGIN + cluster.get_absolute_url(),
    }


def run_summary(event: str, run: Run, expected_seconds: int | None = None) -> str:
    """One line for people: what happened to which run of which job."""
    name = f"Job “{run.job.name}”, run #{run.pk}"
    if event == Event.RUN_FAILED:
        what = f"{run.get_state_display().lower()}"
        detail = f"{run.error_ename}: {run.error_evalue}" if run.error_ename else run.state_reason
        return f"{name} {what}" + (f": {detail[:300]}" if detail else ".")
    if event == Event.RUN_RECOVERED:
        return f"{name} succeeded after failing: the job has recovered."
    if event == Event.RUN_LONG:
        return f"{name} has run longer than the expected {expected_seconds} s."
    return f"{name} succeeded."


def run_payload(
    delivery_id: uuid.UUID, event: str, run: Run, now: datetime, expected_seconds: int | None
) -> dict[str, Any]:
    """The payload of a run event ``event`` about ``run`` (its job loaded), at ``now``."""
    return {
        "version": VERSION,
        "id": str(delivery_id),
        "event": event,
        "occurred_at": now.isoformat(),
        "summary": run_summary(event, run, expected_seconds),
        "job": _job(run.job),
        "run": _run(run),
        "cluster": None,
    }


def cluster_payload(delivery_id: uuid.UUID, cluster: Cluster, now: datetime) -> dict[str, Any]:
    """The payload of ``cluster.expiring`` about ``cluster``, at ``now``."""
    minutes = max(0, int((cluster.expires_at - now).total_seconds() // 60))
    return {
        "version": VERSION,
        "id": str(delivery_id),
        "event": Event.CLUSTER_EXPIRING.value,
        "occurred_at": now.isoformat(),
        "summary": f"Cluster “{cluster.name}” expires in {minutes} minutes, at "
        f"{cluster.expires_at:%Y-%m-%d %H:%M} UTC: extend it to keep it.",
        "job": None,
        "run": None,
        "cluster": _cluster(cluster),
    }


def paused_summary(job: Job, failures: int, last: Run | None) -> str:
    """One line for people: continuous ``job`` paused after ``failures`` failed runs in its
    window, and why ``last`` (its last failed run, if any) failed."""
    window = job.stream_failure_window_minutes
    line = (
        f"Job “{job.name}” paused after {failures} failed runs in {window} minutes: "
        "fix it, then resume it."
    )
    if last is None:
        return line
    detail = f"{last.error_ename}: {last.error_evalue}" if last.error_ename else last.state_reason
    return line + (f" Last failure (run #{last.pk}): {detail[:300]}" if detail else "")


def job_paused_payload(
    delivery_id: uuid.UUID, job: Job, failures: int, last: Run | None
) -> dict[str, Any]:
    """The payload of ``job.paused`` about continuous ``job``, paused (at
    ``job.stream_paused_at``) after ``failures`` failed runs; ``run`` is ``last``, its last
    failed run (with its error), or None."""
    return {
        "version": VERSION,
        "id": str(delivery_id),
        "event": Event.JOB_PAUSED.value,
        "occurred_at": _iso(job.stream_paused_at),
        "summary": paused_summary(job, failures, last),
        "job": _job(job),
        "run": _run(last) if last is not None else None,
        "cluster": None,
    }


def chat_message(payload: dict[str, Any]) -> tuple[str, str, str]:
    """``(title, body, apprise notify type)`` of a payload, for chat targets."""
    event = payload["event"]
    title = {
        Event.RUN_FAILED: "Run failed",
        Event.RUN_SUCCEEDED: "Run succeeded",
        Event.RUN_RECOVERED: "Job recovered",
        Event.RUN_LONG: "Run is taking long",
        Event.CLUSTER_EXPIRING: "Cluster expiring",
        Event.JOB_PAUSED: "Job paused",
    }.get(event, event)
    about = payload.get("job") if event == Event.JOB_PAUSED else None  # the job's page
    link = (about or payload.get("run") or payload.get("cluster") or {}).get("url", "")
    kind = {
        Event.RUN_FAILED: "failure",
        Event.JOB_PAUSED: "failure",
        Event.RUN_SUCCEEDED: "success",
        Event.RUN_RECOVERED: "success",
    }.get(event, "warning")
    return f"Analysis Portal: {title}", f"{payload['summary']}\n{link}".strip(), kind
