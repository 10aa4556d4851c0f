"""Dispatch latency, schedule slot -> RUNNING, with 10,000 enabled jobs.

Set-up: --jobs Job rows (bulk_create), each with one NotebookVersion row (bulk_create,
all pointing at one stored copy of tests/notebooks/trivial.ipynb). --due K of them
(spread over the id range) are the measured ones; the others are enabled, scheduled daily
at hours at least 4 h away, and not due during the benchmark.

1. ``dispatch_due_runs()`` called in this process (no worker running): its time with the
   10,000 enabled jobs and none due (an idle scheduler tick), and with K due at once.
2. The real beat-driven path: a ``celery beat`` subprocess with DISPATCH_INTERVAL=--interval
   (default 2 s, the production default), a control worker (queue "control", concurrency
   1, as in the Procfile) that runs ``dispatch_due_runs`` / ``reap_runs`` / alerts, and
   runs workers (queue "runs"). For each measured repetition the K due jobs get
   ``next_run_at`` slots placed in the future, on the dispatcher's tick grid (multiples of
   the interval since the epoch, ``portal.beat.aligned``), as every 5-field cron slot is
   (cron slots are minute boundaries; the grid points in between stand for them so that a
   repetition need not wait for the next minute): spread over --window seconds
   (--pattern spread, default: slot i at grid point floor(i * points / K)) or all at one
   grid point (--pattern burst, like K jobs "0 6 * * *"). --off-grid places the slots at
   arbitrary instants instead (one at a random point of each of K equal parts of the
   window, or the burst at a random instant): what a slot off the grid would see, tick
   phase included; no cron slot is off the grid. The due jobs' cron is a daily
   slot 12 h away, so after its run is created a job is not due again during the
   benchmark (a "* * * * *" cron would re-fire every already-dispatched job at each minute
   boundary in the middle of the window). Latency = ``started_at - scheduled_for`` of
   each slot's run (``started_at`` is written by the claim, QUEUED -> RUNNING), read
   from the database after all K are RUNNING; split into dispatch (slot ->
   ``created_at``) and hand-over (``created_at`` -> ``started_at``: commit of the
   dispatcher's batch, enqueue, delivery, claim).

   --mode claim (default): the runs workers only claim (``bench/_claim_only.py``: the
   real ``claim_run``, no kernel): what is measured is slot -> claimed, i.e. the
   dispatcher and the queue, not kernel start. --mode execute: the real ``execute_run``
   on the trivial notebook; on 2 cores the workers cannot start K kernels within the
   window, so that latency includes waiting for a free worker process.

Prints p50 / p99 / max over all slots of all repetitions and per repetition, and the
number measured. Target: p99 <= 2 s.

    .venv/bin/python bench/dispatch_latency.py [--runs 3] [--jobs 10000] [--due 200]
        [--window 40] [--pattern spread|burst] [--off-grid] [--interval 2]
        [--mode claim|execute] [--workers 2] [--concurrency 2]
"""

import math
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402

TARGET_P99 = 2.0


def dispatch_tasks(log_path) -> list[tuple[float, int]]:
    """(runtime, runs created) of each dispatch_due_runs task of the control worker's log
    that created at least one run."""
    import re

    pattern = re.compile(
        r"Task jobs\.tasks\.dispatch_due_runs\[[^\]]+\] succeeded in ([0-9.]+)s: (\d+)"
    )
    found = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = pattern.search(line)
        if m and int(m.group(2)) > 0:
            found.append((float(m.group(1)), int(m.group(2))))
    return found


def main():
    p = _env.parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--due", type=int, default=200, help="K: jobs due per repetition (default 200)")
    p.add_argument(
        "--window",
        type=float,
        default=40.0,
        help="seconds the K slots are spread over (default 40)",
    )
    p.add_argument("--pattern", choices=["spread", "burst"], default="spread")
    p.add_argument(
        "--off-grid", action="store_true", help="slots at arbitrary instants, not on the tick grid"
    )
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="DISPATCH_INTERVAL, seconds (default 2, as in production)",
    )
    p.add_argument("--mode", choices=["claim", "execute"], default="claim")
    p.add_argument("--workers", type=int, default=2, help="runs worker processes (default 2)")
    p.add_argument(
        "--concurrency", type=int, default=2, help="pool processes per runs worker (default 2)"
    )
    p.add_argument(
        "--call-runs",
        type=int,
        default=5,
        help="repetitions of the in-process dispatch_due_runs() timing",
    )
    args = p.parse_args()

    process_env = {"DISPATCH_INTERVAL": f"{args.interval:g}"}
    if args.mode == "claim":
        # Claimed runs never heartbeat: keep the reaper from re-queueing them (which would
        # overwrite started_at) while they wait to be deleted.
        process_env["RUN_STALE_AFTER"] = "86400"
    _env.setup(**process_env)

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.db import connection

    from jobs import notebooks, schedule, services
    from jobs.models import Job, NotebookVersion, Run

    owner = _env.user()
    data = (_env.ROOT / "tests" / "notebooks" / "trivial.ipynb").read_bytes()
    parsed = notebooks.read_notebook(data)
    schema = notebooks.inspect_parameters(parsed.nb)
    key = default_storage.save("notebooks/bench/trivial.ipynb", ContentFile(data))

    # --- 10,000 jobs -------------------------------------------------------------------
    t0 = time.monotonic()
    now = datetime.now(UTC)
    step = max(1, args.jobs // args.due)
    due_index = set(range(0, step * args.due, step))
    far_hour = (now.hour + 12) % 24
    rows = []
    for i in range(args.jobs):
        if i in due_index:
            cron = f"0 {far_hour} * * *"
            next_run_at = now + timedelta(hours=6)  # set per repetition below
        else:
            cron = f"{i % 60} {(now.hour + 4 + i % 19) % 24} * * *"
            next_run_at = schedule.next_slot_after(cron, "UTC", now)
        rows.append(
            Job(
                owner=owner,
                name=f"bench {i:05d}",
                schedule_kind=Job.ScheduleKind.CRON,
                cron=cron,
                timezone="UTC",
                parameters={},
                timeout_seconds=600,
                max_retries=0,
                enabled=True,
                next_run_at=next_run_at,
            )
        )
    jobs = Job.objects.bulk_create(rows, batch_size=1000)
    NotebookVersion.objects.bulk_create(
        [
            NotebookVersion(
                job=j,
                number=1,
                storage_key=key,
                original_name="trivial.ipynb",
                size_bytes=parsed.size_bytes,
                sha256=parsed.sha256,
                cell_count=parsed.cell_count,
                code_cell_count=parsed.code_cell_count,
                parameter_schema=schema,
                uploaded_by=owner,
            )
            for j in jobs
        ],
        batch_size=1000,
    )
    due_jobs = [jobs[i] for i in sorted(due_index)]
    due_ids = [j.pk for j in due_jobs]
    with connection.cursor() as cur:
        cur.execute("ANALYZE jobs_job; ANALYZE jobs_notebookversion")
    enabled = Job.objects.filter(enabled=True).count()
    print(
        f"{len(jobs)} jobs ({enabled} enabled, {len(due_ids)} measured) + {len(jobs)} versions "
        f"created in {time.monotonic() - t0:.1f} s; {_env.machine()}"
    )

    def place_slots(slots):
        for job, slot in zip(due_jobs, slots, strict=True):
            job.next_run_at = slot
        Job.objects.bulk_update(due_jobs, ["next_run_at"], batch_size=500)

    def clear_runs():
        Run.objects.filter(job_id__in=due_ids).delete()

    # --- 1. dispatch_due_runs() in this process -------------------------------------------
    # after_task_publish fires in this process once a message is handed to Redis: it
    # gives, for each run, how long after the call started its execute_run was enqueued.
    from celery.signals import after_task_publish

    published = []

    def on_publish(sender=None, **_):
        if sender == "jobs.tasks.execute_run":
            published.append(time.monotonic())

    after_task_publish.connect(on_publish, weak=False)

    def timed_call(batch=None):
        published.clear()
        t = time.monotonic()
        n = len(
            services.dispatch_due_runs()
            if batch is None
            else services.dispatch_due_runs(batch=batch)
        )
        return n, time.monotonic() - t, [p - t for p in published]

    idle, busy, small = [], [], []
    for _ in range(args.call_runs):
        n, elapsed, _ = timed_call()
        idle.append(elapsed)
        assert n == 0, f"{n} runs dispatched with nothing due"
        for batch, out in ((None, busy), (500, small)):
            place_slots([datetime.now(UTC) - timedelta(seconds=1)] * len(due_jobs))
            n, elapsed, pubs = timed_call(batch)
            assert n == len(due_jobs), f"dispatched {n}, expected {len(due_jobs)}"
            out.append((elapsed, pubs))
            clear_runs()
        _env.purge_redis()  # the execute_run messages nobody consumes (no worker yet)
    after_task_publish.disconnect(on_publish)

    def enqueue_summary(results):
        pubs = [p for _, ps in results for p in ps]
        return (
            f"first enqueue after {_env.median([min(ps) for _, ps in results]):.3f} s, "
            f"enqueue p50 {_env.percentile(pubs, 50):.3f} s, "
            f"p99 {_env.percentile(pubs, 99):.3f} s after the call started"
        )

    busy_t = [e for e, _ in busy]
    small_t = [e for e, _ in small]
    call_lines = [
        f"dispatch_due_runs(), {enabled} enabled jobs, none due: "
        f"median {_env.median(idle) * 1000:.1f} ms "
        f"(runs: {_env.fmt_runs([v * 1000 for v in idle], 'ms', 1)})",
        f"dispatch_due_runs(), {enabled} enabled jobs, {len(due_ids)} due at once: "
        f"median {_env.median(busy_t):.3f} s "
        f"= {_env.median(busy_t) / len(due_ids) * 1000:.1f} ms per due job "
        f"(runs: {_env.fmt_runs(busy_t, 's', 3)}); " + enqueue_summary(busy),
        "  same with batch=500 instead of the default 20 "
        "(for comparison, not what beat runs): median "
        f"{_env.median(small_t):.3f} s (runs: {_env.fmt_runs(small_t, 's', 3)}); "
        + enqueue_summary(small),
    ]
    print("\n".join(call_lines))

    # --- 2. beat -> control worker -> runs workers ----------------------------------------
    app = "bench._claim_only" if args.mode == "claim" else "portal"
    t = time.monotonic()
    control = _env.celery_worker("control", 1, "control", **process_env)
    runners = [
        _env.celery_worker("runs", args.concurrency, f"runs{i}", app=app, **process_env)
        for i in range(args.workers)
    ]
    beat = _env.celery_beat(**process_env)
    print(
        f"beat (DISPATCH_INTERVAL={args.interval:g}), control worker x1 (c=1), "
        f"{args.workers} runs worker(s) "
        f"(c={args.concurrency}, mode {args.mode}) ready in {time.monotonic() - t:.1f} s"
    )

    lead = 3.0
    all_lat, per_run = [], []
    for rep in range(args.runs):
        k = len(due_jobs)
        rng = random.Random(rep)
        if args.off_grid:
            start = datetime.now(UTC) + timedelta(seconds=lead + rng.random() * args.interval)
            if args.pattern == "spread":
                # Stratified: one slot at a random point of each of K equal parts of the
                # window, so that slots meet the beat tick at every phase.
                slots = [
                    start + timedelta(seconds=args.window * (i + rng.random()) / k)
                    for i in range(k)
                ]
            else:
                slots = [start] * k
        else:
            first = math.ceil((time.time() + lead) / args.interval) * args.interval
            points = max(1, int(args.window // args.interval))
            if args.pattern == "spread":
                slots = [first + args.interval * (i * points // k) for i in range(k)]
            else:
                slots = [first] * k
            slots = [datetime.fromtimestamp(s, UTC) for s in slots]
        place_slots(slots)
        deadline = (
            time.monotonic() + lead + args.window + 60 + (k * 5 if args.mode == "execute" else 0)
        )
        while True:
            started = Run.objects.filter(job_id__in=due_ids, started_at__isnull=False).count()
            if started >= k or time.monotonic() > deadline:
                break
            for w in runners:
                w.descendants()
            time.sleep(0.5)
        rows = list(
            Run.objects.filter(job_id__in=due_ids).values(
                "job_id", "scheduled_for", "created_at", "started_at", "state", "attempt"
            )
        )
        measured = [r for r in rows if r["started_at"]]
        lat = [(r["started_at"] - r["scheduled_for"]).total_seconds() for r in measured]
        dispatch = [(r["created_at"] - r["scheduled_for"]).total_seconds() for r in measured]
        handover = [(r["started_at"] - r["created_at"]).total_seconds() for r in measured]
        moved = sum(1 for r in rows if r["scheduled_for"] not in slots)
        all_lat += lat
        per_run.append((lat, dispatch, handover))
        print(
            f"  run {rep + 1}: {len(measured)}/{k} RUNNING "
            f"(runs rows {len(rows)}, slot != placed {moved}); "
            f"latency p50 {_env.percentile(lat, 50):.3f} p99 {_env.percentile(lat, 99):.3f} "
            f"max {max(lat, default=float('nan')):.3f} s; "
            f"dispatch p50 {_env.percentile(dispatch, 50):.3f} "
            f"p99 {_env.percentile(dispatch, 99):.3f}; "
            f"hand-over p50 {_env.percentile(handover, 50):.3f} "
            f"p99 {_env.percentile(handover, 99):.3f} s"
        )
        # Reset: wait for the runs to end (execute mode), then delete them.
        if args.mode == "execute":
            end = time.monotonic() + 600
            while (
                Run.objects.filter(job_id__in=due_ids, state__in=Run.ACTIVE_STATES).exists()
                and time.monotonic() < end
            ):
                time.sleep(0.5)
        clear_runs()

    beat.stop()
    for w in runners:
        w.stop()
    control.stop()

    print()
    what = (
        "slot -> claimed by a claim-only runs worker (no kernel start)"
        if args.mode == "claim"
        else "slot -> RUNNING by the real execute_run (trivial notebook)"
    )
    pattern = (
        f"spread over {args.window:g} s"
        if args.pattern == "spread"
        else "burst (all K slots at one instant)"
    )
    pattern += ", off the tick grid" if args.off_grid else ", on the tick grid (as cron slots are)"
    print(
        f"=== dispatch_latency: {enabled} enabled jobs, K={len(due_ids)} due per run, {pattern}, "
        f"{args.runs} runs ({_env.machine()}) ==="
    )
    print(
        f"measured: {what}; {args.workers} runs worker(s) x c={args.concurrency}, "
        f"DISPATCH_INTERVAL={args.interval:g}"
    )
    print("\n".join(call_lines))
    tasks = dispatch_tasks(control.log_path)
    if tasks:
        print(
            f"dispatch_due_runs tasks in the control worker that created runs: {len(tasks)}, "
            f"runtime max {max(t for t, _ in tasks):.3f} s, "
            f"median {_env.median([t for t, _ in tasks]):.3f} s, "
            f"most runs in one task {max(n for _, n in tasks)}"
        )
    p99s = [_env.percentile(lat, 99) for lat, _, _ in per_run]
    print(
        f"latency over all {len(all_lat)} slots: p50 {_env.percentile(all_lat, 50):.3f} s, "
        f"p99 {_env.percentile(all_lat, 99):.3f} s, max {max(all_lat, default=float('nan')):.3f} s"
    )
    p50s = [_env.percentile(lat, 50) for lat, _, _ in per_run]
    print(
        f"median of per-run p50 {_env.median(p50s):.3f} s, "
        f"per-run p99 {_env.fmt_runs(p99s, 's', 3)} (median {_env.median(p99s):.3f} s)"
    )
    p99 = _env.percentile(all_lat, 99)
    print(
        f"target p99 <= {TARGET_P99:g} s: {'MET' if p99 <= TARGET_P99 else 'NOT MET'}"
        f" ({len(all_lat)} of {len(due_ids) * args.runs} slots reached RUNNING)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
