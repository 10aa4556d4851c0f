"""Local cluster launch → READY, for 1 and 2 workers (median of --runs, default 3).

Target: ≤ 10 s. Measures the real path: ``launch_cluster`` (row), ``start_cluster``
(master, workers and the Spark Connect server as detached processes), then syncs until
READY (all workers registered and Spark Connect answering); the cluster is terminated
after each run and the next run starts from nothing.

    .venv/bin/python bench/cluster_startup.py [--runs N]
"""

import time

import _env


def main():
    args = _env.parser(__doc__.splitlines()[0]).parse_args()
    _env.setup()
    from django.contrib.auth import get_user_model

    from clusters import services

    user = get_user_model().objects.create_user("bench", "bench@example.com", is_staff=True)
    print("Local cluster launch -> READY (target <= 10 s)")
    for size in (1, 2):
        times = []
        for i in range(args.runs):
            cluster = services.launch_cluster(
                user, services.ClusterSpec(name=f"bench-{size}-{i}", size=size)
            )
            start = time.monotonic()
            services.start_cluster(cluster.pk)
            cluster = services.wait_until_ready(cluster, timeout=300, interval=0.1)
            times.append(time.monotonic() - start)
            services.terminate_now(cluster, "Benchmark run over.")
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"  {size} worker(s): median {_env.median(times):.2f} s  runs {runs}")


if __name__ == "__main__":
    main()
