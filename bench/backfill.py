"""Time to create a backfill of 1,000 slots, from the service call to the committed runs.

Issue 13's target: a backfill of 1,000 slots is created in <= 2 s. Each measured
repetition makes a fresh hourly job and calls ``groups.create_backfill`` over the 1,000
hourly slots of 2026-01-01 00:00 to 2026-02-11 15:00 UTC, with 3 runs at a time (the
checks, the slots, one bulk insert of runs and one of their events, the group's first
release). Messages go to this benchmark's own Redis after commit; no worker consumes
them. A second figure times the same with every slot already taken and re-run by choice
(the backfill re-run path).

Needs PostgreSQL (a throw-away database of its own) and starts its own Redis.

    .venv/bin/python bench/backfill.py [--runs 5] [--slots 1000]
"""

import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402

TARGET = 2.0


def main() -> None:
    p = _env.parser(__doc__.splitlines()[0], runs=5)
    p.add_argument("--slots", type=int, default=1000)
    args = p.parse_args()
    _env.setup(BACKFILL_MAX_SLOTS=max(args.slots, 2000))
    from jobs import services
    from jobs.models import Job
    from jobs.services import groups

    owner = _env.user()
    end = datetime(2026, 1, 1) + (args.slots - 1) * (datetime(2026, 1, 1, 1) - datetime(2026, 1, 1))
    fresh, rerun = [], []
    for i in range(args.runs + 1):  # the first repetition warms up
        job = services.create_job(
            owner,
            Job(name=f"hourly {i}", cron="0 * * * *", schedule_kind="cron", enabled=False),
            (_env.ROOT / "tests" / "notebooks" / "trivial.ipynb").read_bytes(),
            "trivial.ipynb",
        )
        started = time.perf_counter()
        group = groups.create_backfill(job, owner, datetime(2026, 1, 1), end, max_concurrent=3)
        elapsed = time.perf_counter() - started
        assert group.runs.count() == args.slots
        started = time.perf_counter()
        again = groups.create_backfill(
            job, owner, datetime(2026, 1, 1), end, max_concurrent=3, rerun_existing=True
        )
        elapsed_rerun = time.perf_counter() - started
        assert again.runs.count() == args.slots
        if i:
            fresh.append(elapsed)
            rerun.append(elapsed_rerun)
    print(f"backfill of {args.slots} slots ({_env.machine()})")
    print(
        f"  new slots:   median {_env.median(fresh):.3f} s  runs: {_env.fmt_runs(fresh, digits=3)}"
    )
    print(
        f"  re-run all:  median {_env.median(rerun):.3f} s  runs: {_env.fmt_runs(rerun, digits=3)}"
    )
    verdict = "meets" if _env.median(fresh) <= TARGET else "MISSES"
    print(f"  target: <= {TARGET:.1f} s for new slots: {verdict}")


if __name__ == "__main__":
    main()
