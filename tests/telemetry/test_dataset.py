"""The telemetry dataset API (telemetry/) and the sample generator (telemetry/sample.py).

One sample (5,000 pings over 6 days, plus its JSON export and Talos series) is generated
per module; tests marked slow share one local SparkSession.
"""

import datetime as dt
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import telemetry
import telemetry.sample
from telemetry import Pings, TelemetryError, read_batch_view, select_pings, write_batch_view
from telemetry.paths import Root, discover_layout, make_lister, walk_partitions

ROOT = Path(__file__).resolve().parent.parent.parent
PINGS = 5000
DAYS = 6
END = "20261115"
DATES = [
    (dt.date(2026, 11, 15) - dt.timedelta(days=DAYS - 1 - i)).strftime("%Y%m%d")
    for i in range(DAYS)
]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gen():
    """The sample generator, telemetry.sample."""
    return telemetry.sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory, gen):
    """The module's sample: pings, their JSON export and the Talos series."""
    base = tmp_path_factory.mktemp("telemetry")
    summary = gen.generate(
        base / "pings", pings=PINGS, days=DAYS, end_date=END, json_dir=base / "pings_json"
    )
    talos = gen.generate_talos(base / "talos", days=120, end_date=END)
    return {
        "base": base,
        "pings": base / "pings",
        "json": base / "pings_json",
        "talos": base / "talos",
        "summary": summary,
        "talos_summary": talos,
    }


@pytest.fixture(scope="module")
def table(sample):
    """The sample as one Arrow table, partition columns as strings."""
    partitioning = ds.partitioning(
        pa.schema([(c, pa.string()) for c in telemetry.PARTITION_COLUMNS]), flavor="hive"
    )
    return ds.dataset(sample["pings"], format="parquet", partitioning=partitioning).to_table()


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # no "closing connection" noise at exit
    yield session
    session.stop()


def expected_rows(table, **conditions):
    """Number of rows of ``table`` where every column equals / is within a (lo, hi) range."""
    mask = pa.array(np.ones(table.num_rows, dtype=bool))
    for column, value in conditions.items():
        col = table[column]
        if isinstance(value, tuple):
            cond = pc.and_(pc.greater_equal(col, value[0]), pc.less_equal(col, value[1]))
        else:
            cond = pc.equal(col, value)
        mask = pc.and_(mask, cond)
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def tree_digest(path: Path) -> dict:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# --- the generator ---------------------------------------------------------------------------


def test_generator_is_deterministic(gen, tmp_path):
    for run in ("a", "b"):
        gen.generate(
            tmp_path / run / "pings", pings=1500, days=3, seed=11, json_dir=tmp_path / run / "json"
        )
        gen.generate_talos(tmp_path / run / "talos", seed=11, days=40)
    for kind in ("pings", "json", "talos"):
        first, second = tree_digest(tmp_path / "a" / kind), tree_digest(tmp_path / "b" / kind)
        assert first and first == second, kind
    gen.generate(tmp_path / "c", pings=1500, days=3, seed=12)
    assert tree_digest(tmp_path / "c") != tree_digest(tmp_path / "a" / "pings")


def test_generator_cli_writes_sibling_outputs(gen, tmp_path, capsys):
    assert (
        gen.main(
            [
                "--out",
                str(tmp_path / "pings"),
                "--pings",
                "800",
                "--days",
                "2",
                "--json",
                "--talos",
                "--talos-days",
                "30",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 800 and summary["json_dir"] == str(tmp_path / "pings_json")
    assert summary["talos"]["out_dir"] == str(tmp_path / "talos") and summary["talos"]["days"] == 30
    assert sorted(p.name for p in (tmp_path / "talos").iterdir()) == [
        "_generate_talos.json",
        "_series.json",
        "_shifts.json",
        "part-00000.parquet",
    ]
    assert len(list((tmp_path / "pings_json").glob("pings-*.json"))) == 2
    # Outputs nested in each other, or a directory this script did not write, are refused.
    with pytest.raises(SystemExit):
        gen.main(
            [
                "--out",
                str(tmp_path / "pings"),
                "--pings",
                "10",
                "--json",
                str(tmp_path / "pings" / "j"),
            ]
        )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(gen.UnsafeOutputDir):
        gen.generate_talos(tmp_path / "mine")
    with pytest.raises(gen.UnsafeOutputDir):
        gen.generate(tmp_path / "p2", pings=10, days=1, json_dir=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_documented_command_still_writes_the_sample(tmp_path):
    """``python examples/generate_pings.py`` (README) runs telemetry.sample's command line,
    from any directory."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "generate_pings.py"), "--out", "pings"]
        + ["--pings", "50", "--days", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 50
    assert (tmp_path / "pings" / telemetry.sample.MARKER_NAME).exists()


def test_sample_keeps_the_published_os_mix_and_old_columns(sample, table, gen):
    assert table.num_rows == PINGS
    for column in (
        "client_id",
        "document_id",
        "os_name",
        "os_version",
        "architecture",
        "e10s_enabled",
        "addons",
        "session_length_s",
        "subsession_hours",
        "gc_ms",
    ):
        assert column in table.column_names
    firefox = table.filter(pc.equal(table["app"], "Firefox"))
    shares = Counter(firefox["os_name"].to_pylist())
    total = sum(shares.values())
    assert abs(shares["Windows_NT"] / total - 105_223 / 109_828) < 0.01
    assert abs(shares["Darwin"] / total - 2_368 / 109_828) < 0.01
    assert abs(shares["Linux"] / total - 2_237 / 109_828) < 0.01
    assert set(table["architecture"].to_pylist()) <= {"x86", "x86-64", "arm"}


def test_hangs_have_stacks_durations_and_a_long_tail(table, gen):
    assert table.schema.field("hangs").type == pa.list_(gen.HANG_TYPE)
    counts = pc.list_value_length(table["hangs"]).to_numpy()
    hangs = pc.list_flatten(table["hangs"]).combine_chunks()
    stacks = hangs.field("stack").to_pylist()
    durations = hangs.field("duration_ms").to_numpy()
    assert counts.sum() == len(stacks) > 1000
    # Long tails: most pings have no hang, a few have many; most hangs are short, a few very long.
    assert (counts == 0).mean() > 0.5 and counts.max() >= 20 * max(counts.mean(), 1)
    assert durations.min() >= 128 and durations.max() <= 600_000
    assert np.percentile(durations, 99) > 10 * np.median(durations)
    # Outermost frame first: every stack starts in main and reaches the event loop before the hang.
    assert all(
        s[0] in ("wmain", "main", "Java_org_mozilla_gecko_mozglue_GeckoLoader_nativeRun")
        for s in stacks
    )
    assert all("nsThread::ProcessNextEvent" in s[:-1] for s in stacks)
    last = Counter(s[-1] for s in stacks)
    for frame in (
        "PresShell::DoReflow",
        "nsCycleCollector::collectSlice",
        "mozilla::plugins::PluginInstanceParent::CallNPP_HandleEvent",
        "mozilla::plugins::PluginModuleChromeParent::LoadModule",
    ):
        assert last[frame] > 0, (frame, last)
    # No plugin hangs on Android.
    android = table.filter(pc.equal(table["os_name"], "Android"))
    android_frames = {f for hang in android["hangs"].to_pylist() for h in hang for f in h["stack"]}
    assert not any("plugins" in f for f in android_frames)


def test_hang_count_grows_with_session_length(table):
    counts = pc.list_value_length(table["hangs"]).to_numpy().astype(float)
    session = table["session_length_s"].to_numpy().astype(float)

    def ranks(x):  # average ranks of ties (most pings have no hang)
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        return (starts + (counts - 1) / 2)[inverse]

    spearman = np.corrcoef(ranks(counts), ranks(session))[0, 1]
    assert spearman > 0.3, spearman
    long_sessions = counts[session > np.percentile(session, 75)].mean()
    short_sessions = counts[session < np.percentile(session, 25)].mean()
    assert long_sessions > 5 * short_sessions


def test_addons_cluster_in_communities(table, gen):
    clients = {}
    for client, names in zip(
        table["client_id"].to_pylist(), table["addon_names"].to_pylist(), strict=True
    ):
        clients[client] = names
    # addon_names is aligned with addons.
    name_of = {addon_id: name for addon_id, name, _, _ in gen.ADDONS}
    first = table.slice(0, 200)
    for ids, names in zip(
        first["addons"].to_pylist(), first["addon_names"].to_pylist(), strict=True
    ):
        assert [name_of[i] for i in ids] == names and ids == sorted(ids)
    community = {name: c for _, name, c, _ in gen.ADDONS}
    sets = [set(names) for names in clients.values()]
    n = len(sets)

    def lift(a, b):
        pa_, pb = sum(a in s for s in sets) / n, sum(b in s for s in sets) / n
        return sum(a in s and b in s for s in sets) / n / (pa_ * pb)

    assert lift("Firebug", "Web Developer") > 3
    assert lift("Privacy Badger", "NoScript") > 1.5
    assert lift("Firebug", "Video DownloadHelper") < 1
    assert lift("uBlock Origin", "JSONView") < 1
    # Most profiles with several add-ons draw them mainly from one community.
    several = [s for s in sets if sum(community[a] != "general" for a in s) >= 3]
    dominated = [
        s
        for s in several
        if Counter(community[a] for a in s if community[a] != "general").most_common(1)[0][1]
        >= 2 / 3 * sum(community[a] != "general" for a in s)
    ]
    assert len(several) > 50 and len(dominated) / len(several) > 0.7
    # Every community named in the brief is in the catalogue.
    privacy = {name for name, c in community.items() if c == "privacy"}
    webdev = {name for name, c in community.items() if c == "web-development"}
    assert privacy == {
        "uBlock Origin",
        "Privacy Badger",
        "HTTPS Everywhere",
        "Ghostery",
        "NoScript",
    }
    assert webdev == {"Firebug", "Web Developer", "ColorZilla", "JSONView", "React Developer Tools"}


def test_uptime_histogram_is_one_bucket_of_the_session_length(table, gen):
    uptime = table["simple_measures_uptime"].to_pylist()
    session = table["session_length_s"].to_pylist()
    buckets = gen.UPTIME_BUCKETS.tolist()
    assert buckets[:4] == [0, 1, 2, 3] and buckets[-1] == 10_080
    for histogram, seconds in zip(uptime[:500], session[:500], strict=True):
        assert len(histogram) == 1
        ((key, value),) = histogram
        minutes = seconds // 60
        assert value == 1 and key in buckets and key <= minutes
        index = buckets.index(key)
        assert index == len(buckets) - 1 or minutes < buckets[index + 1]
    assert table.schema.field("gc_ms").type == table.schema.field("simple_measures_uptime").type


def test_json_export_has_the_same_rows(sample, table):
    files = sorted(sample["json"].glob("pings-*.json"))
    assert [f.name for f in files] == [f"pings-{d}.json" for d in DATES]
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(rows) == PINGS
    assert sorted(r["document_id"] for r in rows) == sorted(table["document_id"].to_pylist())
    first = rows[0]
    assert list(first)[:5] == list(telemetry.PARTITION_COLUMNS)
    assert isinstance(first["submission_date"], str) and isinstance(first["gc_ms"], dict)
    by_doc = {r["document_id"]: r for r in rows}
    for row in table.slice(0, 50).to_pylist():
        other = by_doc[row["document_id"]]
        assert other["hangs"] == row["hangs"]
        assert other["gc_ms"] == {str(k): v for k, v in row["gc_ms"]}
        assert other["build_id"] == row["build_id"] and other["addons"] == row["addons"]


def test_talos_series_and_shift_ground_truth(sample, gen):
    table = ds.dataset(sample["talos"], format="parquet").to_table()
    assert table.schema.names == ["test", "platform", "date", "push", "value"]
    assert table.schema.field("date").type == pa.date32()
    tests, platforms = set(table["test"].to_pylist()), set(table["platform"].to_pylist())
    assert len(tests) >= 4 and len(platforms) >= 3
    dates = table["date"].to_pylist()
    assert min(dates) == dt.date(2026, 11, 15) - dt.timedelta(days=119) and max(dates) == dt.date(
        2026, 11, 15
    )
    shifts = json.loads((sample["talos"] / "_shifts.json").read_text())
    series = json.loads((sample["talos"] / "_series.json").read_text())
    assert len(shifts) >= 5 and len(series) == len(tests) * len(platforms)
    pattern = {(s["test"], s["platform"]): s["pattern"] for s in series}
    for shift in shifts:
        assert set(shift) == {
            "test",
            "platform",
            "pattern",
            "push",
            "date",
            "size_sd",
            "direction",
            "before_mean",
            "after_mean",
        }
        assert shift["pattern"] == pattern[(shift["test"], shift["platform"])]
        runs = table.filter(
            pc.and_(
                pc.equal(table["test"], shift["test"]),
                pc.equal(table["platform"], shift["platform"]),
            )
        )
        push = shift["push"]
        assert runs["push"].to_pylist() == list(range(runs.num_rows))
        assert runs["date"][push].as_py() == dt.date.fromisoformat(shift["date"])
        if shift["pattern"] != "gaussian":
            continue
        values = runs["value"].to_numpy()
        before, after = values[push - 12 : push].mean(), values[push : push + 12].mean()
        expected = shift["after_mean"] - shift["before_mean"]
        assert abs(expected) / shift["before_mean"] >= 0.01
        # The observed step has the sign and roughly the size of the injected one.
        assert np.sign(after - before) == np.sign(expected), shift
        assert (
            abs((after - before) - expected) < 0.6 * abs(expected) + 0.02 * shift["before_mean"]
        ), shift
    # Bimodal series: two clearly separated modes, a share of the runs in the upper one.
    bimodal = next(s for s in series if s["pattern"] == "bimodal" and not s["shifts"])
    runs = table.filter(
        pc.and_(
            pc.equal(table["test"], bimodal["test"]),
            pc.equal(table["platform"], bimodal["platform"]),
        )
    )
    relative = np.log(runs["value"].to_numpy()) / bimodal["noise_sd"]
    relative -= np.median(np.sort(relative)[: len(relative) // 3])
    gap = bimodal["mode_offset_sd"]
    in_between = (relative > 3) & (relative < gap - 3)
    assert in_between.mean() < 0.05
    assert (relative > gap / 2).mean() == pytest.approx(bimodal["upper_share"], abs=0.2)
    assert ((relative >= 1.06) & (relative <= 1.1)).mean() < 0.1  # the gap between the modes


# --- filters and roots (no Spark) -------------------------------------------------------------


def test_select_single_value_star_and_range(sample, table):
    root = sample["pings"]
    everything = select_pings(data_root=root)
    assert len(everything.partitions) == sample["summary"]["partitions"]
    assert everything.read_paths == [f"file://{root}"]
    nightly = select_pings("Firefox", "nightly", "*", "*", "*", data_root=root)
    assert nightly.partitions and {
        (p.values["app"], p.values["channel"]) for p in nightly.partitions
    } == {("Firefox", "nightly")}
    days = select_pings("*", "*", "*", "*", (DATES[1], DATES[2]), data_root=root)
    assert {p.values["submission_date"] for p in days.partitions} == {DATES[1], DATES[2]}
    assert sorted(days.read_paths) == [f"file://{root}/submission_date={d}" for d in DATES[1:3]]
    # Every partition is found by exactly one of the per-day selections.
    per_day = sum(len(select_pings(submission_date=d, data_root=root).partitions) for d in DATES)
    assert per_day == len(everything.partitions)
    # Same thing with other spellings of dates.
    same = select_pings(submission_date=(dt.date(2026, 11, 11), "2026-11-12"), data_root=root)
    assert same.paths == days.paths


def test_version_and_build_id_ranges(sample):
    root = sample["pings"]
    versions = {
        p.values["version"]
        for p in select_pings(version=("51.0", "53.0a2"), data_root=root).partitions
    }
    assert versions == {"51.0", "51.0.1", "52.0", "53.0a2"}  # not 50.1.0, not 54.0a1
    assert {
        p.values["version"] for p in select_pings(version="54.0a1", data_root=root).partitions
    } == {"54.0a1"}
    builds = {
        p.values["build_id"]
        for p in select_pings(build_id=("20261101", "20261112"), data_root=root).partitions
    }
    assert builds and all("20261101000000" <= b <= "20261112999999" for b in builds)
    all_builds = {p.values["build_id"] for p in select_pings(data_root=root).partitions}
    assert builds == {b for b in all_builds if "20261101" <= b[:8] <= "20261112"}
    one_day = {
        p.values["build_id"] for p in select_pings(build_id="20261111", data_root=root).partitions
    }
    assert one_day and all(b.startswith("20261111") for b in one_day)
    exact = sorted(all_builds)[0]
    assert {
        p.values["build_id"] for p in select_pings(build_id=exact, data_root=root).partitions
    } == {exact}
    assert select_pings(channel="no-such-channel", data_root=root).partitions == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"submission_date": ("20261112", "20261110")}, "after its end"),
        ({"build_id": ("20261105", "20261101")}, "after its end"),
        ({"version": ("54.0a1", "53.0")}, "after its end"),
        ({"channel": ("release", "beta")}, "after its end"),
        ({"submission_date": ("20261110", "20261112", "20261113")}, "pair"),
        ({"submission_date": "2026111"}, "YYYYMMDD"),
        ({"submission_date": "20261345"}, "calendar day"),
        ({"submission_date": ("yesterday", "20261112")}, "YYYYMMDD"),
        ({"build_id": "2026-11-05"}, "build id"),
        ({"version": ("fifty", "54.0")}, "not a version"),
        ({"channel": None}, "expected"),
        ({"channel": ""}, "empty"),
        pytest.param({"colour": "blue"}, "unknown field 'colour'", marks=pytest.mark.slow),
        pytest.param({"colour": "*"}, "unknown field 'colour'", marks=pytest.mark.slow),
        ({"chanel": "nightly"}, "unknown field 'chanel'"),
        ({"chanel": "*"}, "unknown field 'chanel'"),
    ],
)
def test_bad_filters_raise_telemetry_error(sample, kwargs, message, spark_if_needed):
    with pytest.raises(TelemetryError, match=message):
        if "colour" in kwargs:  # unknown data fields are checked against the schema: needs Spark
            Pings(data_root=sample["pings"], spark=spark_if_needed, **kwargs)
        else:
            select_pings(data_root=sample["pings"], **kwargs)


@pytest.fixture
def spark_if_needed(request):
    """Spark only for the parameter that needs it (keeps the other cases Spark-free)."""
    if "colour" in request.node.callspec.params["kwargs"]:
        return request.getfixturevalue("spark")
    return None


def test_layout_discovery_skips_empty_branches_and_hidden_files(sample, tmp_path):
    import shutil

    leaf = select_pings(data_root=sample["pings"]).partitions[0]
    copy = tmp_path / "root"
    shutil.copytree(leaf.path.local, copy.joinpath(*leaf.names))
    (copy / "submission_date=19990101" / "app=Firefox").mkdir(parents=True)  # sorts first, no data
    (copy / "_SUCCESS").write_text("")
    (copy / "notes").mkdir()
    selection = select_pings(data_root=copy)
    assert selection.layout == telemetry.PARTITION_COLUMNS
    assert [p.values for p in selection.partitions] == [leaf.values]
    assert select_pings(submission_date="19990101", data_root=copy).partitions == []


def test_telemetry_error_is_a_value_error():
    assert issubclass(TelemetryError, ValueError)


def test_missing_root_and_data_root_resolution(sample, tmp_path, monkeypatch):
    with pytest.raises(TelemetryError, match="does not exist"):
        select_pings(data_root=tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TelemetryError, match="not a directory"):
        select_pings(data_root=tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TelemetryError, match="no partitioned Parquet data"):
        select_pings(data_root=tmp_path / "empty")
    # Environment variable, then <cwd>/sample/pings.
    monkeypatch.setenv("TELEMETRY_DATA_ROOT", str(sample["pings"]))
    assert select_pings(channel="beta").root.local == str(sample["pings"])
    monkeypatch.delenv("TELEMETRY_DATA_ROOT")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TelemetryError, match=re.escape(str(tmp_path / "sample" / "pings"))):
        select_pings()
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "pings").symlink_to(sample["pings"])
    assert len(select_pings().partitions) == sample["summary"]["partitions"]
    # What data_root() returns is accepted back (the example notebook passes it on).
    assert select_pings(data_root=telemetry.data_root()).root == telemetry.data_root()
    # file: URIs are local paths; other schemes are kept for Spark.
    assert telemetry.data_root(f"file://{sample['pings']}").local == str(sample["pings"])
    s3 = telemetry.data_root("s3a://bucket/telemetry/pings/")
    assert s3 == Root("s3a://bucket/telemetry/pings", None)
    monkeypatch.delenv("TELEMETRY_VIEWS_ROOT", raising=False)
    assert (
        telemetry.views_root(data_root_value="s3a://bucket/telemetry/pings").uri
        == "s3a://bucket/telemetry/views"
    )
    assert telemetry.views_root(data_root_value=sample["pings"]).local == str(
        sample["base"] / "views"
    )
    monkeypatch.setenv("TELEMETRY_VIEWS_ROOT", "s3a://other/views")
    assert telemetry.views_root().uri == "s3a://other/views"


def test_fraction_is_validated_and_sampling_rule_is_crc32():
    for bad in (0, -0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(TelemetryError, match="fraction"):
            telemetry.sample_threshold(bad)
    assert telemetry.sample_threshold(1.0) == 2**32
    client = "0008b6e4-92ca-45f3-9829-3c9e844a724e"
    assert telemetry.in_sample(client, 0.5) == (zlib.crc32(client.encode()) < 2**31)


# --- Pings with Spark ------------------------------------------------------------------------


@pytest.mark.slow
def test_pings_filters_match_the_data(sample, table, spark):
    root = sample["pings"]
    everything = Pings(data_root=root, spark=spark)
    assert everything.count() == PINGS
    for column in telemetry.PARTITION_COLUMNS:
        assert dict(everything.dtypes)[column] == "string"
    assert dict(everything.dtypes)["hangs"] == "array<struct<stack:array<string>,duration_ms:int>>"
    assert dict(everything.dtypes)["gc_ms"] == "map<int,int>"
    cases = [
        (("Firefox", "nightly", "*", "*", "*"), {"app": "Firefox", "channel": "nightly"}),
        (("*", "*", "*", "*", (DATES[1], DATES[3])), {"submission_date": (DATES[1], DATES[3])}),
        (
            ("Firefox", "release", "51.0.1", "*", DATES[0]),
            {
                "app": "Firefox",
                "channel": "release",
                "version": "51.0.1",
                "submission_date": DATES[0],
            },
        ),
        (
            ("*", "beta", "*", ("20261101", "20261112"), "*"),
            {"channel": "beta", "build_id": ("20261101000000", "20261112999999")},
        ),
    ]
    for args, conditions in cases:
        df = Pings(*args, data_root=root, spark=spark)
        assert df.count() == expected_rows(table, **conditions) > 0, args
    # The partition values come back as strings, exactly as in the directory names.
    row = (
        Pings("Firefox", "beta", "*", "*", DATES[0], data_root=root, spark=spark)
        .select("submission_date", "version", "build_id")
        .first()
    )
    assert (
        row.submission_date == DATES[0]
        and row.version == "52.0"
        and re.fullmatch(r"\d{14}", row.build_id)
    )
    # Data columns as extra filters.
    linux = Pings(data_root=root, spark=spark, os_name="Linux", session_length_s=(60, 3600))
    assert linux.count() == expected_rows(table, os_name="Linux", session_length_s=(60, 3600)) > 0
    # Nothing matches: an empty DataFrame with the full schema.
    empty = Pings(channel="esr", data_root=root, spark=spark)
    assert empty.count() == 0 and empty.columns == everything.columns
    # The hangs column works in Spark: last frames, in SQL.
    from pyspark.sql import functions as F

    last = {
        r.frame
        for r in everything.select(F.explode("hangs").alias("h"))
        .select(F.element_at("h.stack", -1).alias("frame"))
        .distinct()
        .collect()
    }
    assert {"PresShell::DoReflow", "nsCycleCollector::collectSlice"} <= last


@pytest.mark.slow
def test_partition_pruning_reads_only_matching_directories(sample, spark):
    root = sample["pings"]
    spark.conf.set(
        "spark.sql.maxMetadataStringLength", "100000"
    )  # the plan lists every path in full
    try:
        df = Pings(
            "Firefox", "nightly", "*", "*", (DATES[2], DATES[3]), data_root=root, spark=spark
        )
        plan = df._jdf.queryExecution().executedPlan().toString()
    finally:
        spark.conf.unset("spark.sql.maxMetadataStringLength")
    print(plan)
    location = re.search(r"Location: InMemoryFileIndex\((\d+) paths\)\[([^\]]*)", plan)
    assert location, plan
    # Two directories: submission_date=D/app=Firefox/channel=nightly for the two days, nothing else.
    assert location.group(1) == "2"
    assert sorted(location.group(2).split(", ")) == [
        f"file:{root}/submission_date={day}/app=Firefox/channel=nightly" for day in DATES[2:4]
    ]
    files = df.inputFiles()
    assert files
    for file in files:
        values = dict(part.split("=", 1) for part in file.split("/") if "=" in part)
        assert values["app"] == "Firefox" and values["channel"] == "nightly", file
        assert values["submission_date"] in DATES[2:4], file
    on_disk = [
        p
        for p in root.rglob("*.parquet")
        if "channel=nightly" in str(p)
        and "app=Firefox" in str(p)
        and any(f"submission_date={d}" in str(p) for d in DATES[2:4])
    ]
    assert len(files) == len(on_disk)
    # A filter on the deepest column hands Spark exactly the matching leaves.
    builds = Pings(build_id=("20261110", "20261112"), data_root=root, spark=spark)
    plan = builds._jdf.queryExecution().executedPlan().toString()
    n = int(re.search(r"InMemoryFileIndex\((\d+) paths\)", plan).group(1))
    assert n == len(select_pings(build_id=("20261110", "20261112"), data_root=root).partitions)
    assert all("build_id=2026111" in f for f in builds.inputFiles())


@pytest.mark.slow
def test_sampling_is_deterministic_and_close_to_the_fraction(sample, table, spark):
    root = sample["pings"]
    all_clients = set(table["client_id"].to_pylist())
    first = {
        r.client_id
        for r in Pings(fraction=0.1, data_root=root, spark=spark)
        .select("client_id")
        .distinct()
        .collect()
    }
    second = {
        r.client_id
        for r in Pings(fraction=0.1, data_root=root, spark=spark)
        .select("client_id")
        .distinct()
        .collect()
    }
    assert first == second == {c for c in all_clients if telemetry.in_sample(c, 0.1)}
    share = len(first) / len(all_clients)
    assert abs(share - 0.1) < 0.03, share  # ~1,250 clients: sd about 0.0085
    pings_share = Pings(fraction=0.1, data_root=root, spark=spark).count() / PINGS
    assert 0.05 < pings_share < 0.15, pings_share
    larger = {
        r.client_id
        for r in Pings(fraction=0.3, data_root=root, spark=spark)
        .select("client_id")
        .distinct()
        .collect()
    }
    assert first < larger and abs(len(larger) / len(all_clients) - 0.3) < 0.05
    # Sampling composes with filters: a client's pings stay together.
    nightly = Pings("*", "nightly", fraction=0.1, data_root=root, spark=spark)
    assert {r.client_id for r in nightly.select("client_id").distinct().collect()} <= first
    with pytest.raises(TelemetryError, match="fraction"):
        Pings(fraction=0, data_root=root, spark=spark)


@pytest.mark.slow
def test_hadoop_and_file_list_listers_agree_with_local_listing(sample, spark):
    """The code paths used for s3a:// roots (Hadoop FileSystem through the JVM, and the file
    list of a Spark read on Spark Connect), exercised on a file:// URI."""
    from telemetry.filters import parse_partition_filter
    from telemetry.paths import _FileListLister, _HadoopLister, resolve_root

    local = resolve_root(sample["pings"])
    uri = Root(f"file://{sample['pings']}", None)
    filters = {
        "channel": parse_partition_filter("channel", "beta"),
        "submission_date": parse_partition_filter("submission_date", (DATES[0], DATES[1])),
    }
    expected_lister = make_lister(local)
    layout = discover_layout(expected_lister)
    assert layout == telemetry.PARTITION_COLUMNS
    expected = [p.values for p in walk_partitions(expected_lister, layout, filters)]
    assert expected
    hadoop = make_lister(uri, spark)
    assert isinstance(hadoop, _HadoopLister)
    hadoop.check()
    assert discover_layout(hadoop) == layout
    assert [p.values for p in walk_partitions(hadoop, layout, filters)] == expected
    file_list = _FileListLister(uri, spark)
    file_list.check()
    assert discover_layout(file_list) == layout
    assert [p.values for p in walk_partitions(file_list, layout, filters)] == expected
    with pytest.raises(TelemetryError, match="does not exist"):
        make_lister(Root(f"file://{sample['base']}/nowhere", None), spark).check()
    with pytest.raises(
        TelemetryError, match="cannot access data root nosuchfs://bucket/pings: .*nosuchfs"
    ):
        Pings(data_root="nosuchfs://bucket/pings", spark=spark)


# --- batch views -----------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_view_round_trip(sample, spark, tmp_path, monkeypatch):
    from pyspark.sql import functions as F

    monkeypatch.delenv("TELEMETRY_VIEWS_ROOT", raising=False)
    monkeypatch.setenv("TELEMETRY_DATA_ROOT", str(sample["pings"]))
    daily = (
        Pings(spark=spark)
        .groupBy("submission_date", "channel", "os_name")
        .agg(
            F.count("*").alias("pings"),
            F.sum(F.size("hangs")).alias("hangs"),
            F.countDistinct("client_id").alias("clients"),
        )
    )
    location = write_batch_view(daily, "daily_os_counts", partition_by="submission_date")
    assert location == str(sample["base"] / "views" / "daily_os_counts")  # <data_root>/../views
    assert sorted(p.name for p in Path(location).glob("submission_date=*")) == [
        f"submission_date={d}" for d in DATES
    ]
    back = read_batch_view("daily_os_counts")
    assert back.dtypes == daily.dtypes  # submission_date is still a string, column order kept
    assert sorted(map(tuple, back.collect())) == sorted(map(tuple, daily.collect()))
    # A filter on the view's partition column is a partition filter: Spark prunes the other days.
    one_day = back.where(F.col("submission_date") == DATES[0])
    plan = one_day._jdf.queryExecution().executedPlan().toString()
    assert re.search(rf"PartitionFilters: \[.*submission_date#\d+ = {DATES[0]}", plan), plan
    assert (
        one_day.groupBy().sum("pings").first()[0]
        == Pings(submission_date=DATES[0], spark=spark).count()
    )
    assert back.groupBy().sum("pings").first()[0] == PINGS

    # Explicit root, append and error modes, no partitioning.
    views = tmp_path / "views"
    small = daily.where(F.col("channel") == "beta")
    write_batch_view(small, "beta_counts", root=views)
    write_batch_view(small, "beta_counts", mode="append", root=views)
    assert read_batch_view("beta_counts", root=views).count() == 2 * small.count()
    with pytest.raises(TelemetryError, match="already exists"):
        write_batch_view(small, "beta_counts", mode="error", root=views)
    write_batch_view(small, "beta_counts", root=views)  # overwrite replaces
    assert read_batch_view("beta_counts", root=views).count() == small.count()

    for bad in ("../escape", "1st", "with-dash", "", "a/b", "_hidden", None):
        with pytest.raises(TelemetryError, match="identifier-like"):
            write_batch_view(small, bad, root=views)
    with pytest.raises(TelemetryError, match="identifier-like"):
        read_batch_view("../pings", root=views, spark=spark)
    with pytest.raises(TelemetryError, match="not among"):
        write_batch_view(small, "x", partition_by=["no_such_column"], root=views)
    with pytest.raises(TelemetryError, match="mode"):
        write_batch_view(small, "x", mode="replace", root=views)
    with pytest.raises(TelemetryError, match="no batch view"):
        read_batch_view("never_written", root=views, spark=spark)

    # The view metadata of non-local roots is written and read by Spark (here on a file:// URI).
    from telemetry.views import _read_meta, _write_meta

    remote = Root(f"file://{tmp_path}/remote_view", None)
    _write_meta(small, remote, {"schema": {"fields": [], "type": "struct"}, "partition_by": []})
    assert _read_meta(spark, remote) == {
        "schema": {"fields": [], "type": "struct"},
        "partition_by": [],
    }
    assert _read_meta(spark, Root(f"file://{tmp_path}/no_view", None)) is None


def test_get_spark_is_get_or_create(monkeypatch):
    calls = []

    class Builder:
        def getOrCreate(self):
            calls.append(1)
            return "session"

    import pyspark.sql

    monkeypatch.setattr(pyspark.sql.SparkSession, "builder", Builder())
    assert telemetry.get_spark() == "session" and calls == [1]
