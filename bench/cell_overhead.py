"""Per-cell overhead of the portal's execution path at 400 trivial cells, progress on.

A notebook of --cells code cells ``x = 1`` is made a job. Each measured repetition times,
in this process (no worker, no queue):

- portal: ``services.execute_run(run_id)`` on a fresh QUEUED run of that job -- the real
  path: claim, ``jobs.executor.execute`` with the "portal" papermill engine, its nbclient
  hooks and the monitor thread whose tick calls ``record_progress`` (heartbeat
  and progress UPDATE, partial notebook rendered and stored), then ``finish_run`` (output
  stored, HTML rendered). The time of the ``executor.execute`` call itself is taken by
  wrapping it (a benchmark-side wrapper, nothing in the application changes); the
  per-cell overhead is computed from it. Twice: with the production intervals
  (RUN_HEARTBEAT_INTERVAL and RUN_PARTIAL_SAVE_INTERVAL from the settings, default 5 s)
  and with bin/test's 0.5 s (more ticks and partial saves per second).
- bare: ``papermill.execute_notebook(..., progress_bar=False,
  request_save_on_cell_execute=False)`` with ipykernel's own kernelspec, unsandboxed (the
  portal's kernel starts only inside a run's sandbox, so the sandbox's start-up, about
  0.05 s, counts in the portal's time), and the same parameters (so the same 1 + cells
  code cells);
- bare, papermill's default ``request_save_on_cell_execute=True``, for context.

Per-cell overhead = (portal execute - bare) / cells, in ms. Target: <= 5 ms per cell.

    .venv/bin/python bench/cell_overhead.py [--runs 3] [--cells 400]
"""

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402

TARGET_MS = 5.0


def main():
    p = _env.parser(__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=400, help="code cells x = 1 (default 400)")
    args = p.parse_args()

    _env.setup()
    import nbformat
    import papermill
    from django.conf import settings

    from jobs import executor, kernel, services
    from jobs.models import Job, Run

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell("x = 1") for _ in range(args.cells)]
    data = nbformat.writes(nb).encode()
    source = _env.DATA_DIR / "cells.ipynb"
    source.write_bytes(data)
    owner = _env.user()
    job = services.create_job(owner, Job(name="bench cells", max_retries=0), data, "cells.ipynb")
    kernel.ensure_kernelspec()

    timed = {}
    real_execute = executor.execute

    def timed_execute(*a, **kw):
        t0 = time.monotonic()
        try:
            return real_execute(*a, **kw)
        finally:
            timed["execute"] = time.monotonic() - t0

    executor.execute = timed_execute  # services calls executor.execute through the module

    # Where the time goes, from benchmark-side wrappers (module attributes looked up at call
    # time by execute_run's tick and by the engine's hook; no application code changes).
    spent = {}

    def account(owner, name, label):
        real = getattr(owner, name)

        def wrapper(*a, **kw):
            t0 = time.monotonic()
            try:
                return real(*a, **kw)
            finally:
                n, total = spent.get(label, (0, 0.0))
                spent[label] = (n + 1, total + time.monotonic() - t0)

        setattr(owner, name, wrapper)

    from jobs.services import attempt, execution

    account(attempt.PartialUploader, "_store", "tick: PartialUploader._store (render + store)")
    account(execution, "record_progress", "tick: record_progress (UPDATE)")
    account(
        executor._Session,
        "save_partial",
        "hook: save_partial (nbformat.write, in the execution loop)",
    )

    production = (settings.RUN_HEARTBEAT_INTERVAL, settings.RUN_PARTIAL_SAVE_INTERVAL)

    def portal_once(heartbeat, partial) -> dict:
        settings.RUN_HEARTBEAT_INTERVAL, settings.RUN_PARTIAL_SAVE_INTERVAL = heartbeat, partial
        run = services.run_now(job, owner, enqueue=False)
        spent.clear()
        t0, c0 = time.monotonic(), time.process_time()
        done = services.execute_run(run.pk)
        total, cpu = time.monotonic() - t0, time.process_time() - c0
        if done is None or done.state != Run.State.SUCCEEDED:
            state, reason = getattr(done, "state", None), getattr(done, "state_reason", "")
            raise RuntimeError(f"run {run.pk} ended {state}: {reason}")
        return {
            "execute": timed["execute"],
            "execute_run": total,
            "cells_done": done.cells_done,
            "cells_total": done.cells_total,
            "cpu": cpu,
            "spent": dict(spent),
        }

    bare_cpu = {}

    def bare_once(save: bool) -> float:
        params = {
            "run_id": str(uuid.uuid4()),
            "logical_date": "2026-01-01T00:00:00+00:00",
            "spark_master": "local[2]",
        }
        c0 = time.process_time()
        t0 = time.monotonic()
        papermill.execute_notebook(
            str(source),
            str(_env.DATA_DIR / "bare.ipynb"),
            parameters=params,
            # ipykernel's own kernelspec: the portal's starts only inside a run's sandbox.
            kernel_name="python3",
            language="python",
            progress_bar=False,
            request_save_on_cell_execute=save,
            cwd=str(_env.DATA_DIR),
        )
        elapsed = time.monotonic() - t0
        bare_cpu.setdefault(save, []).append(time.process_time() - c0)
        return elapsed

    fast = (0.5, 0.5)
    variants = {
        f"portal, production intervals ({production[0]:g} s / {production[1]:g} s)": lambda: (
            portal_once(*production)
        ),
        "portal, bin/test intervals (0.5 s / 0.5 s)": lambda: portal_once(*fast),
        "bare papermill, request_save_on_cell_execute=False": lambda: bare_once(False),
        "bare papermill, request_save_on_cell_execute=True (default)": lambda: bare_once(True),
    }
    print(f"{args.cells} cells x = 1 (+1 injected parameters cell); {_env.machine()}")
    noise = _env.DATA_DIR / "kernel-stderr.log"
    for fn in variants.values():  # warm-up, not counted
        with _env.stderr_to(noise):
            fn()
    results = {name: [] for name in variants}
    for i in range(args.runs):
        line = []
        for name, fn in variants.items():
            with _env.stderr_to(noise):
                r = fn()
            results[name].append(r)
            line.append(
                f"{r['execute']:.2f} (execute_run {r['execute_run']:.2f})"
                if isinstance(r, dict)
                else f"{r:.2f}"
            )
        print(f"  run {i + 1}: " + " | ".join(line) + " s")

    names = list(variants)
    bare = [v for v in results[names[2]]]
    m_bare = _env.median(bare)
    print()
    print(
        f"=== cell_overhead: {args.cells} cells, median of {args.runs} runs ({_env.machine()}) ==="
    )
    for name in names:
        values = results[name]
        if values and isinstance(values[0], dict):
            execute = [v["execute"] for v in values]
            whole = [v["execute_run"] for v in values]
            m = _env.median(execute)
            per_cell = (m - m_bare) / args.cells * 1000
            print(f"{name}:")
            print(f"  executor.execute {m:6.2f} s   runs: {_env.fmt_runs(execute)}")
            print(
                f"  execute_run      {_env.median(whole):6.2f} s   runs: {_env.fmt_runs(whole)}"
                "  (claim + execute + output/HTML + final UPDATE)"
            )
            paired = [(e - b) / args.cells * 1000 for e, b in zip(execute, bare, strict=True)]
            print(
                f"  per-cell overhead (median execute - median bare) / {args.cells} = "
                f"{per_cell:.2f} ms   "
                f"target <= {TARGET_MS:g} ms: {'MET' if per_cell <= TARGET_MS else 'NOT MET'}"
            )
            print(
                "  per-cell overhead of each run, paired with the bare run next to it: "
                f"{_env.fmt_runs(paired, 'ms')}"
                f" (median {_env.median(paired):.2f} ms)"
            )
            progress = sorted({(v["cells_done"], v["cells_total"]) for v in values})
            print(
                f"  final progress (cells_done, cells_total) of the SUCCEEDED runs: {progress}"
                f"  (expected ({args.cells + 1}, {args.cells + 1}))"
            )
            cpu = [v["cpu"] for v in values]
            cpu_per_cell = (_env.median(cpu) - _env.median(bare_cpu[False][1:])) / args.cells * 1000
            print(
                "  CPU of this process (all threads; the kernel is another process) "
                f"{_env.median(cpu):.2f} s"
                f"   runs: {_env.fmt_runs(cpu)}; vs bare: {cpu_per_cell:.2f} ms CPU per cell"
            )
            labels = sorted({label for v in values for label in v["spent"]})
            for label in labels:
                calls = [v["spent"].get(label, (0, 0.0)) for v in values]
                counts, seconds = [c[0] for c in calls], [c[1] for c in calls]
                print(
                    f"  {label}: calls per run {counts}, seconds per run {_env.fmt_runs(seconds)}"
                )
            print(
                f"  per-cell incl. finish ((execute_run - bare) / {args.cells}) = "
                f"{(_env.median(whole) - m_bare) / args.cells * 1000:.2f} ms"
            )
        else:
            m = _env.median(values)
            save = "True" in name
            print(
                f"{name}: {m:6.2f} s   runs: {_env.fmt_runs(values)}   "
                f"({m / args.cells * 1000:.2f} ms per cell); "
                f"CPU of this process {_env.median(bare_cpu[save][1:]):.2f} s"
            )
    executor.execute = real_execute
    return 0


if __name__ == "__main__":
    sys.exit(main())
