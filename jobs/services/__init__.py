"""The verbs of scheduled notebooks: one domain action each, one transaction each.

Split by responsibility; callers use the package (``from jobs import services``):

- ``jobs``: job editing (create, settings, notebook versions, pause, resume, delete);
- ``dispatch``: run creation and dispatch (Run now, re-run, due schedule slots, enqueue);
- ``execution``: claim, execute, finish (retry, store the outputs, publish);
- ``attempt`` and ``executors``: an attempt's state, and the local (sandboxed kernel) and
  EMR executors behind one interface;
- ``recovery``: cancel, and the reaper of lost workers and lost messages;
- ``alerts``: the e-mail of a finished run;
- ``retention``: deleting the outputs of runs past their job's retention.

docs/architecture.md describes how they fit together.
"""

from jobs import executor
from jobs.services.alerts import send_run_alert
from jobs.services.attempt import SparkTargetError
from jobs.services.dispatch import dispatch_due_runs, rerun, run_now
from jobs.services.execution import (
    claim_run,
    execute_run,
    finish_run,
    record_progress,
    worker_name,
)
from jobs.services.executors import SANDBOX_CONNECT_PORT, connect_user_id
from jobs.services.jobs import (
    create_job,
    delete_job,
    job_for_notebook,
    set_job_enabled,
    sync_version,
    update_job,
    upload_version,
)
from jobs.services.recovery import cancel_run, reap_runs, retry_delay
from jobs.services.retention import expire_run_outputs, retention_days

__all__ = [
    "SANDBOX_CONNECT_PORT",
    "SparkTargetError",
    "cancel_run",
    "claim_run",
    "connect_user_id",
    "create_job",
    "delete_job",
    "dispatch_due_runs",
    "execute_run",
    "executor",
    "expire_run_outputs",
    "finish_run",
    "job_for_notebook",
    "reap_runs",
    "record_progress",
    "rerun",
    "retention_days",
    "retry_delay",
    "run_now",
    "send_run_alert",
    "set_job_enabled",
    "sync_version",
    "update_job",
    "upload_version",
    "worker_name",
]
