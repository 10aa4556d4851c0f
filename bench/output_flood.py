"""Peak memory of the worker while a notebook prints 1 GB, through the real execution path.

Each repetition makes a QUEUED run of a one-cell notebook and calls
``services.execute_run(run_id)`` in this process, as a runs worker's pool process does
(claim, ``jobs.executor.execute`` in a sandbox with the portal kernel, output stored and
rendered, final UPDATE). Two notebooks, one after the other:

- ``one``: ``print('x' * 10**9)``, one stream message of 1 GB (the client refuses it
  unread: the run ends FAILED, "output exceeded 100 MB");
- ``loop``: 1,000 prints of 1 MiB, each flushed (one message each: the cell keeps
  OUTPUT_STREAM_MAX_BYTES, 10 MB, and a truncation marker, and the run ends SUCCEEDED).
  Unflushed, ipykernel sends what a 0.2 s flush interval gathered as one message, over
  100 MB here, so the run ends like ``one``.

It prints the run's state and message, the wall time of ``execute_run``, and the peak
resident memory of this process (``VmHWM`` in /proc/self/status, reset before each run
through /proc/self/clear_refs; the kernel is another process and does not count), with
the resident memory before the run. Targets: ends within 60 s, worker peak < 500 MB.

    .venv/bin/python bench/output_flood.py [--runs 1] [--only one|loop]
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402

TARGET_SECONDS = 60.0
TARGET_MB = 500.0

NOTEBOOKS = {
    "one": "print('x' * 10**9)",
    "loop": "for _ in range(1000):\n    print('x' * 2**20, flush=True)",
}


def rss_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process, in MB (2**20 bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start VmHWM again from the current resident memory (Linux, "5" in clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def main():
    p = _env.parser(__doc__.splitlines()[0], runs=1)
    p.add_argument("--only", choices=sorted(NOTEBOOKS), help="one notebook only")
    args = p.parse_args()

    _env.setup()
    import nbformat

    from jobs import kernel, services
    from jobs.models import Job, Run

    kernel.ensure_kernelspec()
    owner = _env.user()
    print(_env.machine())
    results = []
    for name, source in NOTEBOOKS.items():
        if args.only and name != args.only:
            continue
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        nb.cells = [nbformat.v4.new_code_cell(source)]
        data = nbformat.writes(nb).encode()
        job = services.create_job(owner, Job(name=f"flood {name}", max_retries=0), data, "f.ipynb")
        for _ in range(args.runs):
            run = services.run_now(job, owner, enqueue=False)
            before = rss_mb("VmRSS")
            reset_peak()
            t0 = time.monotonic()
            done = services.execute_run(run.pk)
            elapsed = time.monotonic() - t0
            peak = rss_mb("VmHWM")
            done = done or Run.objects.get(pk=run.pk)
            results.append((name, done.state, elapsed, peak))
            print(
                f"{name:5} {done.state:10} {elapsed:6.1f} s  worker RSS before {before:6.0f} MB, "
                f"peak {peak:6.0f} MB  output {done.output_bytes / 2**20:.1f} MB  "
                f"reason: {done.state_reason[:60]!r}"
            )
    print()
    for name, state, elapsed, peak in results:
        met = elapsed <= TARGET_SECONDS and peak < TARGET_MB
        print(
            f"{name}: {state}, {elapsed:.1f} s (target <= {TARGET_SECONDS:.0f} s), worker peak "
            f"{peak:.0f} MB (target < {TARGET_MB:.0f} MB): {'met' if met else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
