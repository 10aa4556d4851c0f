"""Whole-notebook overhead of the portal against the bare papermill CLI.

For the trivial test notebook and for the example Spark notebook (on a generated sample of
--pings telemetry pings), each measured repetition times

- portal: ``services.run_now`` on a job (this process) -> a real Celery worker subprocess
  (queue "runs", concurrency 1, started once and reused) claims and executes it -> the
  run is SUCCEEDED with its HTML rendered (``html_key`` set), observed by polling the
  database (every 10 ms for the first 5 s, then every 100 ms). The split comes from the
  run's own timestamps: queue wait (created_at -> started_at), execution (started_at ->
  finished_at; ``finish_run`` takes finished_at before it stores the output and renders
  the HTML) and finish (finished_at -> observed: storing the output, rendering the HTML,
  the final UPDATE, polling); and, of the execution, the time spent inside code cells
  (papermill's per-cell durations in the output notebook; the rest is kernel start-up and
  papermill/nbclient around the cells);
- papermill: ``.venv/bin/papermill in.ipynb out.ipynb -k python3 [-p data_path ...]`` as a
  subprocess with PYSPARK_SUBMIT_ARGS="--master local[2] pyspark-shell",
  SPARK_LOCAL_IP=127.0.0.1 and PYTHONPATH=<project> (the example imports the project's
  ``telemetry`` package, which the portal kernel has on its path).

Both run the same snapshot of each notebook, taken when the benchmark starts.

Every portal run executes in its sandbox (bubblewrap, the owner's uid, no network). The
same run through a second worker with KERNEL_SANDBOX=none (queue "runs-unsandboxed") is
timed beside it: the portal as it was before sandboxes. The sandbox's own start-up cost is
printed separately: making and removing an empty sandbox around ``true``, and a kernel's
start (to kernel_info reply) in a sandbox against without one.

For context only, ``papermill.execute_notebook`` in this already-warm process (no
interpreter start, no imports) is timed as well.

One warm-up of each (not counted) comes first; then the variants alternate, so that
drifting machine load hits them alike. Prints the median of --runs and every run, and the
ratios. Targets: portal <= 1.5 x papermill for the trivial notebook; sandboxed portal <=
1.1 x unsandboxed portal for the Spark example.

    .venv/bin/python bench/notebook_overhead.py [--runs 3] [--pings 20000] [--no-spark]
"""

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402

TARGET = 1.5
SANDBOX_TARGET = 1.1
POLL = 0.01


def sandbox_startup(runs: int) -> dict:
    """Seconds to make, run ``true`` in and remove an empty sandbox; and to start a kernel
    (until it answers kernel_info) with and without one. Medians of ``runs``."""
    import asyncio
    import uuid

    from jobs import kernel
    from jobs.provisioner import SandboxKernelManager
    from portal.sandbox import Limits, Sandbox, SandboxSpec, uid_for

    kernel.ensure_kernelspec()

    def box(enabled: bool) -> Sandbox:
        spec = SandboxSpec(
            name=f"bench-{uuid.uuid4().hex[:8]}", uid=uid_for(4343), limits=Limits.for_runs()
        )
        sandbox = Sandbox(spec)
        sandbox.enabled = enabled
        if not enabled:
            sandbox.cgroup = None
        return sandbox

    async def kernel_ready(sandbox: Sandbox) -> float:
        t0 = time.monotonic()
        km = SandboxKernelManager(kernel_name=kernel.settings.PORTAL_KERNEL_NAME, sandbox=sandbox)
        await km.start_kernel(env=kernel.kernel_env("local[1]"))
        client = km.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        elapsed = time.monotonic() - t0
        client.stop_channels()
        await km.shutdown_kernel(now=True)
        return elapsed

    empty, sandboxed, bare = [], [], []
    for _ in range(runs + 1):  # the first of each is a warm-up
        t0 = time.monotonic()
        sandbox = box(True).prepare()
        sandbox.popen(["true"], {"PATH": "/usr/bin:/bin"}).wait()
        sandbox.destroy()
        empty.append(time.monotonic() - t0)
        for enabled, into in ((True, sandboxed), (False, bare)):
            sandbox = box(enabled).prepare()
            try:
                into.append(asyncio.run(kernel_ready(sandbox)))
            finally:
                sandbox.destroy()
    return {"empty": empty[1:], "kernel sandboxed": sandboxed[1:], "kernel unsandboxed": bare[1:]}


def main():
    p = _env.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--pings", type=int, default=20_000, help="pings in the Spark sample (default 20000)"
    )
    p.add_argument("--no-spark", action="store_true", help="only the trivial notebook")
    args = p.parse_args()

    _env.setup(LOCAL_SPARK_MASTER="local[2]")
    import subprocess

    from jobs import services
    from jobs.models import Job, Run
    from telemetry import sample

    owner = _env.user()
    notebooks = {"trivial": (_env.ROOT / "tests" / "notebooks" / "trivial.ipynb", {})}
    if not args.no_spark:
        sample_dir = _env.DATA_DIR / "sample" / "pings"
        t = time.monotonic()
        info = sample.generate(sample_dir, pings=args.pings)
        print(
            f"sample: {info['rows']} pings, {info['partitions']} Parquet files "
            f"in {time.monotonic() - t:.1f} s"
        )
        notebooks["spark (telemetry_hello_world)"] = (
            _env.ROOT / "examples" / "telemetry_hello_world.ipynb",
            {"data_path": str(sample_dir)},
        )

    # Snapshot the notebooks: the job stores its own copy, and papermill must run the same
    # bytes even if someone edits examples/ while the benchmark runs.
    snapshot = _env.DATA_DIR / "notebooks"
    snapshot.mkdir(parents=True, exist_ok=True)
    for label, (path, params) in list(notebooks.items()):
        copy = snapshot / path.name
        copy.write_bytes(path.read_bytes())
        notebooks[label] = (copy, params)

    jobs = {}
    for label, (path, params) in notebooks.items():
        jobs[label] = services.create_job(
            owner,
            Job(name=f"bench {label}", parameters=params, max_retries=0),
            path.read_bytes(),
            path.name,
        )

    startup = sandbox_startup(args.runs)
    t = time.monotonic()
    worker = _env.celery_worker("runs", 1, "runs", LOCAL_SPARK_MASTER="local[2]")
    unsandboxed = _env.celery_worker(
        "runs-unsandboxed", 1, "unsandboxed", LOCAL_SPARK_MASTER="local[2]", KERNEL_SANDBOX="none"
    )
    print(
        f"workers pid {worker.pid} (sandboxed), {unsandboxed.pid} (KERNEL_SANDBOX=none) ready in "
        f"{time.monotonic() - t:.1f} s; {_env.machine()}"
    )

    # PYTHONPATH: the example imports the project's ``telemetry`` package, which the portal
    # kernel gets on its path (jobs.kernel.kernel_env); bare papermill needs it too.
    pm_env = {
        "PYSPARK_SUBMIT_ARGS": "--master local[2] pyspark-shell",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": str(_env.ROOT),
    }
    out_dir = _env.DATA_DIR / "papermill"
    out_dir.mkdir(parents=True, exist_ok=True)

    def cells_seconds(nb_bytes: bytes) -> float:
        """Sum of the code cells' execution times that papermill records in the notebook."""
        import nbformat

        nb = nbformat.reads(nb_bytes.decode("utf-8"), as_version=4)
        return sum(
            (c.metadata.get("papermill", {}).get("duration") or 0.0)
            for c in nb.cells
            if c.cell_type == "code"
        )

    from jobs.tasks import execute_run

    def portal_once(job, queue="runs") -> dict:
        t0 = time.monotonic()
        run = services.run_now(job, owner, enqueue=False)
        execute_run.apply_async((run.pk,), queue=queue)
        last_scan = 0.0
        while True:
            row = (
                Run.objects.filter(pk=run.pk)
                .values(
                    "state",
                    "html_key",
                    "output_key",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "state_reason",
                    "error_evalue",
                )
                .get()
            )
            if row["state"] in Run.FINAL_STATES and (
                row["html_key"] or row["state"] != Run.State.SUCCEEDED
            ):
                break
            elapsed = time.monotonic() - t0
            if elapsed > 600:
                raise RuntimeError(f"run {run.pk} still {row['state']} after 600 s")
            if elapsed - last_scan >= 1.0:  # remember kernels/JVMs for the teardown (cheap at 1 Hz)
                worker.descendants()
                unsandboxed.descendants()
                last_scan = elapsed
            # Fine polling while a short run may end, coarse after: polling costs CPU too.
            time.sleep(POLL if elapsed < 5 else 0.1)
        total = time.monotonic() - t0
        seen = datetime.now(UTC)
        if row["state"] != Run.State.SUCCEEDED:
            raise RuntimeError(
                f"run {run.pk} ended {row['state']}: {row['state_reason']} {row['error_evalue']}\n"
                f"worker log: {worker.log_path}"
            )
        from django.core.files.storage import default_storage

        with default_storage.open(row["output_key"], "rb") as fh:
            cells = cells_seconds(fh.read())
        return {
            "total": total,
            "cells": cells,
            "queue": (row["started_at"] - row["created_at"]).total_seconds(),
            "execution": (row["finished_at"] - row["started_at"]).total_seconds(),
            "finish": (seen - row["finished_at"]).total_seconds(),
        }

    bare_cells: list[float] = []

    def papermill_once(path, params) -> float:
        import os

        cmd = [
            str(_env.ROOT / ".venv" / "bin" / "papermill"),
            str(path),
            str(out_dir / "out.ipynb"),
            "-k",
            "python3",
        ]
        for name, value in params.items():
            cmd += ["-p", name, str(value)]
        t0 = time.monotonic()
        done = subprocess.run(
            cmd, cwd=_env.DATA_DIR, env={**os.environ, **pm_env}, capture_output=True, text=True
        )
        elapsed = time.monotonic() - t0
        if done.returncode != 0:
            raise RuntimeError(f"papermill failed ({done.returncode}): {done.stderr[-3000:]}")
        bare_cells.append(cells_seconds((out_dir / "out.ipynb").read_bytes()))
        return elapsed

    def inprocess_once(path, params) -> float:
        """papermill.execute_notebook in this (warm) process: no interpreter start or
        imports, for context only."""
        import os

        import papermill

        saved = {k: os.environ.get(k) for k in pm_env}
        os.environ.update(pm_env)
        try:
            # The kernel inherits this process's stderr: Spark's console noise goes to a file.
            with _env.stderr_to(out_dir / "inprocess-stderr.log"):
                t0 = time.monotonic()
                papermill.execute_notebook(
                    str(path),
                    str(out_dir / "out-inprocess.ipynb"),
                    parameters=params,
                    kernel_name="python3",
                    progress_bar=False,
                    cwd=str(_env.DATA_DIR),
                )
                return time.monotonic() - t0
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    results = {}
    for label, (path, params) in notebooks.items():
        warm_portal = portal_once(jobs[label])
        warm_open = portal_once(jobs[label], "runs-unsandboxed")
        warm_pm = papermill_once(path, params)
        print(
            f"{label}: warm-up (not counted) portal {warm_portal['total']:.2f} s, unsandboxed "
            f"{warm_open['total']:.2f} s, papermill {warm_pm:.2f} s"
        )
        inprocess_once(path, params)
        bare_cells.clear()
        portal, opened, bare, inproc = [], [], [], []
        for i in range(args.runs):
            portal.append(portal_once(jobs[label]))
            opened.append(portal_once(jobs[label], "runs-unsandboxed"))
            bare.append(papermill_once(path, params))
            inproc.append(inprocess_once(path, params))
            print(
                f"  run {i + 1}: portal {portal[-1]['total']:.2f} s "
                f"(queue {portal[-1]['queue']:.2f}, execution {portal[-1]['execution']:.2f}, "
                f"finish {portal[-1]['finish']:.2f}; cells {portal[-1]['cells']:.2f}), "
                f"unsandboxed {opened[-1]['total']:.2f} s, "
                f"papermill CLI {bare[-1]:.2f} s (cells {bare_cells[-1]:.2f}), "
                f"papermill in-process {inproc[-1]:.2f} s"
            )
        results[label] = (portal, opened, bare, inproc, list(bare_cells))

    print()
    print(f"=== notebook_overhead: median of {args.runs} runs ({_env.machine()}) ===")
    print("sandbox start-up:")
    for part, values in startup.items():
        print(f"  {part:<19}{_env.median(values):6.3f} s   runs: {_env.fmt_runs(values, digits=3)}")
    extra = _env.median(startup["kernel sandboxed"]) - _env.median(startup["kernel unsandboxed"])
    print(f"  the sandbox adds {extra:.3f} s to a kernel's start")
    for label, (portal, opened, bare, inproc, pm_cells) in results.items():
        totals = [r["total"] for r in portal]
        m_portal, m_bare = _env.median(totals), _env.median(bare)
        ratio = m_portal / m_bare
        print(f"{label}:")
        print(f"  portal    {m_portal:6.2f} s   runs: {_env.fmt_runs(totals)}")
        for part in ("queue", "execution", "finish"):
            values = [r[part] for r in portal]
            print(f"    {part:<9}{_env.median(values):6.2f} s   runs: {_env.fmt_runs(values)}")
        values = [r["cells"] for r in portal]
        print(
            f"    (cells: {_env.median(values):.2f} s of the execution is in code cells, "
            f"papermill's per-cell durations; runs: {_env.fmt_runs(values)})"
        )
        open_totals = [r["total"] for r in opened]
        m_open = _env.median(open_totals)
        print(f"  portal, KERNEL_SANDBOX=none {m_open:6.2f} s   runs: {_env.fmt_runs(open_totals)}")
        met = "MET" if m_portal / m_open <= SANDBOX_TARGET else "NOT MET"
        verdict = "" if label == "trivial" else f"   target <= {SANDBOX_TARGET:.1f}x: {met}"
        print(f"  ratio sandboxed/unsandboxed {m_portal / m_open:.2f}x{verdict}")
        print(f"  papermill CLI {m_bare:6.2f} s   runs: {_env.fmt_runs(bare)}")
        print(
            f"    (cells: {_env.median(pm_cells):.2f} s in code cells; "
            f"runs: {_env.fmt_runs(pm_cells)})"
        )
        verdict = ""
        if label == "trivial":
            verdict = f"   target <= {TARGET:.1f}x: {'MET' if ratio <= TARGET else 'NOT MET'}"
        print(f"  ratio portal/papermill {ratio:.2f}x{verdict}")
        paired = [r["total"] / b for r, b in zip(portal, bare, strict=True)]
        print(
            "  ratio of each run, paired with the papermill run next to it: "
            f"{_env.fmt_runs(paired, 'x')}"
        )
        m_in = _env.median(inproc)
        print(
            f"  (context) papermill.execute_notebook in a warm process {m_in:6.2f} s   "
            f"runs: {_env.fmt_runs(inproc)}"
            f"; portal/that {m_portal / m_in:.2f}x"
        )
    worker.stop()
    unsandboxed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
