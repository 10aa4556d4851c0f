"""Where the data lives: root resolution and partition listing.

Roots are local directories or URIs (``s3a://bucket/prefix``, ``hdfs://...``).
Local roots are listed with ``os.scandir``; other roots through the Hadoop
``FileSystem`` of a classic Spark session (so ``s3a://`` works wherever the session
has the S3A connector and credentials), or, on Spark Connect (no JVM in the client),
from the file list of a Spark read of the whole root.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import TelemetryError
from .spark import jvm_of

DATA_ROOT_ENV = "TELEMETRY_DATA_ROOT"
VIEWS_ROOT_ENV = "TELEMETRY_VIEWS_ROOT"
STREAM_ROOT_ENV = "TELEMETRY_STREAM_ROOT"
DEFAULT_DATA_ROOT = os.path.join("sample", "pings")  # relative to the working directory
DEFAULT_STREAM_ROOT = os.path.join("sample", "stream")  # idem

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Root:
    """A resolved location: ``uri`` for Spark, ``local`` path when on this machine."""

    uri: str
    local: str | None

    def join(self, *parts: str) -> Root:
        if self.local is not None:
            path = os.path.join(self.local, *parts)
            return Root(_local_uri(path), path)
        return Root("/".join([self.uri.rstrip("/"), *parts]), None)

    def parent(self) -> Root:
        if self.local is not None:
            path = os.path.dirname(self.local.rstrip(os.sep)) or os.sep
            return Root(_local_uri(path), path)
        scheme, rest = self.uri.split(":", 1)
        if rest.startswith("//"):  # scheme://authority/path
            authority, _, path = rest[2:].partition("/")
            parent = posixpath.dirname("/" + path.rstrip("/"))
            return Root(f"{scheme}://{authority}{parent.rstrip('/')}", None)
        return Root(f"{scheme}:{posixpath.dirname(rest.rstrip('/'))}", None)

    def __str__(self) -> str:
        return self.local if self.local is not None else self.uri


def _local_uri(path: str) -> str:
    # Not Path.as_uri(): Hadoop's Path does not decode %-escapes.
    return "file://" + path


def resolve_root(value: str | os.PathLike | Root) -> Root:
    """Resolve a root given as a path (relative to the working directory, ``~``
    allowed) or a URI. ``file:`` URIs become local paths; other schemes are kept. A
    ``Root`` (what ``data_root()`` returns) is already resolved and comes back as it is."""
    if isinstance(value, Root):
        return value
    text = os.fspath(value)
    if not text:
        raise TelemetryError("the data root is an empty string")
    if _URI_RE.match(text) and not re.match(r"^[A-Za-z]:[\\/]", text):
        if text.lower().startswith("file:"):
            path = re.sub(r"^file:(//(localhost)?)?", "", text, flags=re.I)
            return resolve_root(unquote(path))
        return Root(text.rstrip("/") or text, None)
    path = os.path.abspath(os.path.expanduser(text))
    return Root(_local_uri(path), path)


def data_root(data_root: str | os.PathLike | None = None) -> Root:
    """The pings root: ``data_root``, else env ``TELEMETRY_DATA_ROOT``, else
    ``<cwd>/sample/pings`` (in a portal kernel the cwd is the kernel working
    directory, where ``manage.py quickstart`` writes the sample)."""
    if data_root is None:
        data_root = os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return resolve_root(data_root)


def views_root(root: str | os.PathLike | None = None, data_root_value=None) -> Root:
    """The batch-views root: ``root``, else env ``TELEMETRY_VIEWS_ROOT``, else the
    directory ``views`` next to the pings root (``<data_root>/../views``)."""
    if root is None:
        root = os.environ.get(VIEWS_ROOT_ENV) or None
    if root is not None:
        return resolve_root(root)
    return data_root(data_root_value).parent().join("views")


def stream_root(landing_dir: str | os.PathLike | None = None) -> Root:
    """The landing directory of the streaming pings: ``landing_dir``, else env
    ``TELEMETRY_STREAM_ROOT``, else ``<cwd>/sample/stream``."""
    if landing_dir is None:
        landing_dir = os.environ.get(STREAM_ROOT_ENV) or DEFAULT_STREAM_ROOT
    return resolve_root(landing_dir)


# ------------------------------------------------------------------------ listing


@dataclass(frozen=True)
class Partition:
    """One leaf directory: its location, ``values`` (column -> string value, in
    directory order; None for Hive's null partition) and ``names`` (the directory
    names from the root down, as on disk)."""

    path: Root
    values: dict
    names: tuple[str, ...] = ()


def _is_hidden(name: str) -> bool:
    # Spark and Arrow skip these (``_SUCCESS``, ``_generate_pings.json``, ``.crc``).
    return name.startswith(("_", "."))


def _split(name: str) -> tuple[str, str | None] | None:
    if "=" not in name or _is_hidden(name):
        return None
    key, _, raw = name.partition("=")
    value = unquote(raw)
    return key, None if value == "__HIVE_DEFAULT_PARTITION__" else value


class _LocalLister:
    def __init__(self, root: Root):
        self.root = root

    def check(self) -> None:
        if not os.path.isdir(self.root.local):
            what = "is not a directory" if os.path.exists(self.root.local) else "does not exist"
            raise TelemetryError(
                f"data root {self.root.local} {what}. Pass data_root=..., set "
                f"{DATA_ROOT_ENV}, or generate a sample there with "
                f"`python -m telemetry.sample --out {self.root.local}`"
            )

    def entries(self, parts: tuple[str, ...]) -> tuple[list[str], bool]:
        """(sub-directory names, whether there are data files) of root/parts."""
        dirs, has_files = [], False
        with os.scandir(os.path.join(self.root.local, *parts)) as it:
            for entry in it:
                if _is_hidden(entry.name):
                    continue
                if entry.is_dir():
                    dirs.append(entry.name)
                else:
                    has_files = True
        return sorted(dirs), has_files


def _java_message(exc: Exception) -> str:
    """The Java exception behind a py4j error ("...FileSystem for scheme "s3a""), or
    the first line of the Python one."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            return str(java.toString())
        except Exception:
            pass
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _HadoopLister:
    """Lists through the session's Hadoop FileSystem (s3a://, hdfs://, ...)."""

    def __init__(self, root: Root, spark, jvm):
        self.root = root
        self.jvm = jvm
        self.spark = spark
        self.fs = None

    def check(self) -> None:
        try:
            path = self.jvm.org.apache.hadoop.fs.Path(self.root.uri)
            self.fs = path.getFileSystem(self.spark._jsc.hadoopConfiguration())
            exists = self.fs.exists(path) and self.fs.getFileStatus(path).isDirectory()
        except Exception as exc:  # py4j: no FileSystem for the scheme, credentials, ...
            raise TelemetryError(
                f"cannot access data root {self.root.uri}: {_java_message(exc)}"
            ) from None
        if not exists:
            raise TelemetryError(
                f"data root {self.root.uri} does not exist or is not a directory. "
                f"Pass data_root=... or set {DATA_ROOT_ENV}"
            )

    def entries(self, parts: tuple[str, ...]) -> tuple[list[str], bool]:
        if self.fs is None:
            self.check()
        path = self.jvm.org.apache.hadoop.fs.Path("/".join([self.root.uri, *parts]))
        dirs, has_files = [], False
        for status in self.fs.listStatus(path):
            name = status.getPath().getName()
            if _is_hidden(name):
                continue
            if status.isDirectory():
                dirs.append(name)
            else:
                has_files = True
        return sorted(dirs), has_files


class _FileListLister:
    """Spark Connect: no JVM in the client, so list the whole root once through a Spark
    read (``DataFrame.inputFiles()``) and work on that file list."""

    def __init__(self, root: Root, spark):
        self.root = root
        self.spark = spark
        self._dirs: dict[tuple[str, ...], tuple[list[str], bool]] | None = None

    def check(self) -> None:
        if self._dirs is not None:
            return
        try:
            files = self.spark.read.parquet(self.root.uri).inputFiles()
        except Exception as exc:
            raise TelemetryError(f"cannot read data root {self.root.uri}: {exc}") from None
        prefix = self.root.uri.rstrip("/") + "/"
        tree: dict[tuple[str, ...], tuple[set, list]] = {}
        for file in files:
            if not file.startswith(prefix):
                continue
            parts = tuple(file[len(prefix) :].split("/"))
            for depth in range(len(parts)):
                node = tree.setdefault(parts[:depth], (set(), [False]))
                if depth == len(parts) - 1:
                    node[1][0] = True
                else:
                    node[0].add(parts[depth])
        self._dirs = {k: (sorted(d), f[0]) for k, (d, f) in tree.items()}

    def entries(self, parts: tuple[str, ...]) -> tuple[list[str], bool]:
        self.check()
        return self._dirs.get(parts, ([], False))


def make_lister(root: Root, spark=None):
    """A lister for ``root``: ``check()`` raises ``TelemetryError`` when the root is
    missing; ``entries(parts)`` gives (sub-directories, has data files) of a directory.

    Local roots need no Spark. Other roots need ``spark``: a classic session lists
    through its Hadoop FileSystem; a Spark Connect session lists the whole root once
    through a Spark read.
    """
    if root.local is not None:
        return _LocalLister(root)
    if spark is None:
        raise TelemetryError(f"listing {root.uri} needs a SparkSession (spark=...)")
    jvm = jvm_of(spark)
    if jvm is not None:
        return _HadoopLister(root, spark, jvm)
    return _FileListLister(root, spark)


def discover_layout(lister) -> tuple[str, ...] | None:
    """The partition columns, outermost first, found by descending into the first
    ``key=value`` directory at each level down to a directory with data files (trying
    the next one when a branch holds no data); None when the root holds no
    partitioned data."""

    def search(parts: tuple[str, ...], keys: tuple[str, ...]):
        dirs, has_files = lister.entries(parts)
        if has_files and keys:
            return keys
        for name in dirs:
            kv = _split(name)
            if kv is None:
                continue
            found = search((*parts, name), (*keys, kv[0]))
            if found is not None:
                return found
        return None

    return search((), ())


def walk_partitions(lister, layout: tuple[str, ...], filters: dict) -> list[Partition]:
    """The leaf directories under the root whose values match ``filters`` (partition
    column -> ``Filter``), sorted by location.

    The tree is walked one level at a time and only directories whose ``key=value``
    matches are listed further (pruning on the file system: non-matching branches are
    never listed). Raises ``TelemetryError`` when a matching branch does not follow
    ``layout`` (directories of other columns, or data files at another depth).
    """
    leaves: list[Partition] = []
    frontier: list[tuple[tuple[str, ...], dict]] = [((), {})]
    for depth in range(len(layout) + 1):
        next_frontier = []
        for parts, values in frontier:
            dirs, has_files = lister.entries(parts)
            if depth == len(layout):
                if has_files:
                    leaves.append(Partition(lister.root.join(*parts), values, parts))
                continue
            for name in dirs:
                kv = _split(name)
                if kv is None:
                    continue
                key, value = kv
                if key != layout[depth]:
                    raise TelemetryError(
                        f"{lister.root}/{'/'.join(parts + (name,))}: expected a "
                        f"{layout[depth]}=... directory at this depth (partition columns "
                        f"{'/'.join(layout)}); the root mixes layouts"
                    )
                if key in filters and not filters[key].matches(value):
                    continue
                next_frontier.append(((*parts, name), {**values, key: value}))
        frontier = next_frontier
    leaves.sort(key=lambda p: p.path.uri)
    return leaves
