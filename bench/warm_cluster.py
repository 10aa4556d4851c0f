"""The example Spark notebook on a warm local cluster vs bare papermill with cold local Spark.

Target: portal on a warm cluster ≤ 0.3 × bare papermill. The portal side is a run of a
job whose Spark target is a running local cluster, executed by ``services.execute_run``
(claim, kernel, Spark Connect, output stored and rendered); it is timed from the call to
the run being SUCCEEDED. The bare side is ``papermill`` on the same notebook and sample
with ``--master local[2]`` (a new Spark JVM per run). Medians of --runs (default 3).

    .venv/bin/python bench/warm_cluster.py [--runs N] [--pings N]
"""

import os
import subprocess
import time

import _env


def main():
    parser = _env.parser(__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=20_000)
    args = parser.parse_args()
    _env.setup()
    from django.contrib.auth import get_user_model

    from clusters import services as cluster_services
    from jobs import services
    from jobs.models import Job
    from telemetry import sample

    sample_dir = _env.DATA_DIR / "sample" / "pings"
    sample.generate(str(sample_dir), pings=args.pings, days=7)
    notebook = _env.ROOT / "examples" / "telemetry_hello_world.ipynb"

    user = get_user_model().objects.create_user("bench", "bench@example.com", is_staff=True)
    cluster = cluster_services.launch_cluster(
        user, cluster_services.ClusterSpec(name="warm", size=2)
    )
    cluster_services.start_cluster(cluster.pk)
    cluster = cluster_services.wait_until_ready(cluster, timeout=300)
    spec = Job(
        name="hello",
        spark_target="cluster",
        cluster=cluster,
        parameters={"data_path": str(sample_dir)},
    )
    job = services.create_job(user, spec, notebook.read_bytes(), notebook.name)
    services.execute_run(
        services.run_now(job, user, enqueue=False).pk
    )  # warm the Connect server's executors

    portal = []
    for _ in range(args.runs):
        start = time.monotonic()
        run = services.execute_run(services.run_now(job, user, enqueue=False).pk)
        portal.append(time.monotonic() - start)
        assert run.state == "SUCCEEDED", run.state_reason
    cluster_services.terminate_now(cluster, "Benchmark over.")

    env = dict(
        os.environ,
        PYSPARK_SUBMIT_ARGS="--master local[2] pyspark-shell",
        SPARK_LOCAL_IP="127.0.0.1",
        PLOTLY_RENDERER="plotly_mimetype",
        PYTHONPATH=str(_env.ROOT),
    )
    bare = []
    out = _env.DATA_DIR / "bare.ipynb"
    for _ in range(args.runs):
        start = time.monotonic()
        subprocess.run(
            [
                str(_env.ROOT / ".venv" / "bin" / "papermill"),
                str(notebook),
                str(out),
                "-k",
                "python3",
                "-p",
                "data_path",
                str(sample_dir),
                "--no-progress-bar",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        bare.append(time.monotonic() - start)

    p, b = _env.median(portal), _env.median(bare)
    print(
        f"Example Spark notebook, {args.pings:,} pings "
        "(target: warm cluster <= 0.3 x bare papermill)"
    )
    portal_runs = ", ".join(f"{t:.2f}" for t in portal)
    bare_runs = ", ".join(f"{t:.2f}" for t in bare)
    print(f"  portal, warm local cluster (2 workers): median {p:.2f} s  runs {portal_runs}")
    print(f"  bare papermill, cold local[2] Spark:    median {b:.2f} s  runs {bare_runs}")
    print(f"  ratio portal/bare: {p / b:.2f}")


if __name__ == "__main__":
    main()
