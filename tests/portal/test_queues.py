"""Each task goes to the queue whose worker is meant for it."""

from portal.celery import app

EXPECTED = {
    "jobs.tasks.execute_run": "runs",
    # Continuous runs have a worker of their own; their supervisor ticks with the others.
    "jobs.tasks.execute_stream_run": "streams",
    "jobs.tasks.supervise_streams": "control",
    # On the host that has the continuous jobs' directories.
    "jobs.tasks.remove_stream_dirs": "clusters",
    "jobs.tasks.prune_stream_dirs": "clusters",
    "jobs.tasks.dispatch_due_runs": "control",
    "jobs.tasks.reap_runs": "control",
    "jobs.tasks.send_run_alert": "control",
    "jobs.tasks.send_stream_paused_alert": "control",
    "jobs.tasks.expire_run_outputs": "control",
    "clusters.tasks.start_cluster_task": "clusters",
    "clusters.tasks.stop_cluster_task": "clusters",
    "clusters.tasks.sync_local_clusters": "clusters",
    "clusters.tasks.sync_emr_clusters": "clusters",
    "clusters.tasks.cluster_lifetimes": "clusters",
    "clusters.tasks.send_expiry_warning": "clusters",  # beside the lifetimes, as before
    "quotas.tasks.warn_budgets": "control",
    "quotas.tasks.send_budget_warning": "control",
    "notify.tasks.notify_run": "control",
    "notify.tasks.notify_job_paused": "control",
    "notify.tasks.notify_tick": "control",
    # Waits on other people's servers: beside the other outbound calls.
    "notify.tasks.deliver_notification": "clusters",
    "api.tasks.forget_idempotency_keys": "control",
}


OUR_APPS = {"jobs", "clusters", "quotas", "portal", "telemetry", "notify", "api"}


def test_every_task_of_the_portal_has_a_queue_chosen_for_it():
    app.loader.import_default_modules()
    ours = {
        name
        for name in app.tasks
        if name.split(".")[0]
        in {"jobs", "clusters", "quotas", "portal", "telemetry", "notify", "api"}
    }
    assert ours == set(EXPECTED), "a new task: decide its queue here"
    routed = {name: app.amqp.router.route({}, name)["queue"].name for name in ours}
    assert routed == EXPECTED


def test_beat_ticks_go_where_their_task_is_routed():
    # A cluster launch (seconds) on "clusters" cannot hold up a dispatcher tick on "control".
    for entry in app.conf.beat_schedule.values():
        assert (
            app.amqp.router.route(dict(entry.get("options", {})), entry["task"])["queue"].name
            == EXPECTED[entry["task"]]
        )
