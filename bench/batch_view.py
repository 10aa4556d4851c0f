"""The batch-view example's figures at the documented size: the same query over the raw JSON
pings and over the same rows and columns in Parquet.

The source document (Mozilla's "Telemetry meets Parquet") reports speed-ups "of up to a
couple of orders of magnitude" for queries over Parquet batch views against the raw JSON,
and Parquet files "up to 8x" smaller for the same content and compression.
``examples/batch_view.ipynb`` makes the same comparison on the sample; this script makes
it at sizes where the speed-up shows. For each --pings size it

- generates the sample with its raw JSON export (``telemetry.sample.generate``: 14 days,
  seed 42, newline-delimited JSON, uncompressed) in a temporary directory;
- converts the raw JSON into Parquet with Spark, every row and every column, uncompressed
  (``compression=none``): the same content with the same (no) compression on both sides;
- runs the notebook's same-content query (release-channel pings: per OS the ping count
  and the mean session length; three narrow columns, one filter) over each, one untimed
  run of each first, then --runs runs in turn; the fastest run of each counts, as in the
  notebook;
- prints the speed-up (raw JSON time / Parquet time) and the size ratio (raw JSON bytes /
  Parquet bytes), beside the document's.

Why the size matters: every Spark query pays a fixed cost (planning, two stages, the
collect: a few tenths of a second on this machine), while the JSON query's cost grows
with the bytes it parses (every field of every ping, about 1.1 KB) and the Parquet
query's with the three columns it reads (a few bytes per ping: two dictionary-encoded
strings and an integer). The speed-up therefore grows with the data towards the ratio of
the per-ping costs, and is near 1 on a small sample.

Spark runs in this process, ``local[2]`` with a 2 GiB driver. Prints figures; asserts
nothing. Needs no service (no database, Redis or sandbox), only a JRE and ``.venv``.

    .venv/bin/python bench/batch_view.py [--runs 3] [--pings 100000,2000000]
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import _env  # noqa: E402

# The notebook's schema of the raw JSON (given, so Spark does not read everything once
# more to infer it, and reads the histograms as maps).
JSON_SCHEMA = (
    "submission_date STRING, app STRING, channel STRING, version STRING, build_id STRING, "
    "client_id STRING, document_id STRING, os_name STRING, os_version STRING, "
    "architecture STRING, e10s_enabled BOOLEAN, addons ARRAY<STRING>, "
    "session_length_s BIGINT, subsession_hours DOUBLE, gc_ms MAP<STRING, INT>, "
    "addon_names ARRAY<STRING>, simple_measures_uptime MAP<STRING, INT>, "
    "hangs ARRAY<STRUCT<stack: ARRAY<STRING>, duration_ms: INT>>"
)
DOCUMENT_SPEEDUP = "up to a couple of orders of magnitude (~100x)"
DOCUMENT_SIZE_RATIO = "up to 8x"
MB = 1e6  # figures in MB (10^6 bytes), as the notebook prints them


def spark_session():
    """A local[2] session in this process, its console output quiet."""
    os.environ.setdefault(
        "PYSPARK_SUBMIT_ARGS", "--master local[2] --driver-memory 2g pyspark-shell"
    )
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.appName("bench-batch-view")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def query(df):
    """The notebook's same-content query: reads channel, os_name and session_length_s."""
    from pyspark.sql import functions as F

    return (
        df.where(F.col("channel") == "release")
        .groupBy("os_name")
        .agg(F.count("*").alias("pings"), F.avg("session_length_s").alias("avg_session_length_s"))
    )


def file_bytes(directory: Path, suffix: str) -> int:
    return sum(p.stat().st_size for p in directory.rglob(f"*{suffix}"))


def measure(spark, pings: int, runs: int, base: Path) -> dict:
    """Generate ``pings``, convert, time the query both ways; return the figures."""
    import telemetry.sample

    started = time.perf_counter()
    summary = telemetry.sample.generate(base / "pings", pings=pings, json_dir=base / "pings_json")
    generate_s = time.perf_counter() - started
    shutil.rmtree(base / "pings")  # only the raw JSON is compared
    raw_dir, parquet_dir = base / "pings_json", base / "pings_parquet"

    def read_json():
        return spark.read.schema(JSON_SCHEMA).json(str(raw_dir))

    def read_parquet():
        return spark.read.parquet(str(parquet_dir))

    started = time.perf_counter()
    read_json().write.option("compression", "none").parquet(str(parquet_dir))
    convert_s = time.perf_counter() - started
    raw_bytes, parquet_bytes = file_bytes(raw_dir, ".json"), file_bytes(parquet_dir, ".parquet")
    raw_bytes -= (raw_dir / telemetry.sample.JSON_MARKER_NAME).stat().st_size

    sources = {"raw JSON": read_json, "Parquet": read_parquet}
    answers = {name: sorted(query(read()).collect()) for name, read in sources.items()}
    times: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(runs):
        for name, read in sources.items():
            t0 = time.perf_counter()
            query(read()).collect()
            times[name].append(time.perf_counter() - t0)
    shutil.rmtree(parquet_dir)
    shutil.rmtree(raw_dir)
    return {
        "pings": pings,
        "rows": summary["rows"],
        "generate_s": generate_s,
        "convert_s": convert_s,
        "raw_bytes": raw_bytes,
        "parquet_bytes": parquet_bytes,
        "times": times,
        "same_answer": answers["raw JSON"] == answers["Parquet"],
    }


def main() -> int:
    p = _env.parser(__doc__.splitlines()[0], runs=3)
    p.add_argument(
        "--pings",
        default="100000,2000000",
        help="comma-separated sample sizes (default 100000,2000000)",
    )
    args = p.parse_args()
    sizes = [int(s) for s in args.pings.split(",")]
    spark = spark_session()
    print(f"machine: {_env.machine()}; Spark {spark.version}, local[2]")
    print(f"document: speed-up {DOCUMENT_SPEEDUP}; size ratio {DOCUMENT_SIZE_RATIO}")
    for pings in sizes:
        base = Path(tempfile.mkdtemp(prefix="bench-batch-view-"))
        try:
            f = measure(spark, pings, args.runs, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        json_s, parquet_s = min(f["times"]["raw JSON"]), min(f["times"]["Parquet"])
        print(
            f"\n{f['rows']:,} pings (generated in {f['generate_s']:.1f} s, "
            f"converted to Parquet in {f['convert_s']:.1f} s), load {os.getloadavg()[0]:.2f}"
        )
        print(
            f"  raw JSON {f['raw_bytes'] / MB:.1f} MB, Parquet {f['parquet_bytes'] / MB:.1f} MB "
            f"(both uncompressed): size ratio {f['raw_bytes'] / f['parquet_bytes']:.2f}x"
        )
        print(f"  query over raw JSON: {_env.fmt_runs(f['times']['raw JSON'])}")
        print(f"  query over Parquet:  {_env.fmt_runs(f['times']['Parquet'])}")
        medians = _env.median(f["times"]["raw JSON"]) / _env.median(f["times"]["Parquet"])
        print(
            f"  speed-up (fastest runs) {json_s / parquet_s:.1f}x; medians {medians:.1f}x; "
            f"same answer: {f['same_answer']}"
        )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
