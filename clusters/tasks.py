"""Celery tasks of clusters: thin wrappers around clusters.services.

Local clusters are processes on the host of the worker that started them, so these tasks
run on the "clusters" queue, consumed on the cluster host (README, "Growing a local
cluster past one machine"), apart from the dispatcher's "control" queue: a cluster start
takes seconds and must not delay a schedule slot.
"""

import logging

from celery import shared_task, signals

from clusters import services
from clusters.backends import local
from clusters.models import Cluster
from portal.mail import MAIL_TASK_OPTIONS

log = logging.getLogger(__name__)


@signals.task_postrun.connect
def _reap_cluster_processes(**_) -> None:
    """After any task, wait for exited cluster processes this pool process started."""
    local.reap_children()


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=360)
def start_cluster_task(cluster_id: int) -> str | None:
    """Start a PENDING cluster on its backend (after launch)."""
    cluster = services.start_cluster(cluster_id)
    log.info("start cluster=%s state=%s", cluster_id, cluster and cluster.state)
    return cluster.state if cluster else None


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=180)
def stop_cluster_task(cluster_id: int) -> str | None:
    """Terminate a TERMINATING cluster on its backend (after ``request_termination``)."""
    cluster = services.terminate_on_backend(cluster_id)
    return cluster.state if cluster else None


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def sync_local_clusters() -> int:
    """Record the state of live local clusters; beat, every CLUSTER_SYNC_INTERVAL s."""
    return services.sync_clusters(Cluster.Backend.LOCAL)


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def sync_emr_clusters() -> int:
    """Record the state of live EMR clusters in one batch; beat, every EMR_SYNC_INTERVAL s."""
    return services.sync_clusters(Cluster.Backend.EMR)


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def cluster_lifetimes() -> dict:
    """Enqueue expiry warnings and terminate expired clusters; beat, every 30 s."""
    return {
        "warned": services.warn_expiring_clusters(),
        "terminated": services.terminate_expired_clusters(),
    }


@shared_task(**MAIL_TASK_OPTIONS)
def send_expiry_warning(cluster_id: int) -> bool:
    """E-mail a cluster's owner before it expires, once; retried on mail-server errors."""
    return services.send_expiry_warning(cluster_id)
