"""The logs of a run: collected where its processes write them, masked, capped, stored
with the run, and read back for the run page and the API.

What a run on this host logs (``LocalExecutor``):

- ``kernel.log``: everything the kernel process writes to its stdout and stderr file
  descriptors outside the notebook's cells (Python warnings, a crash, the Python workers'
  stderr): a file the worker opens in the sandbox's own directory, which the sandbox
  cannot see (``jobs.provisioner``);
- ``driver.log``: the Spark driver's log4j output at WARN and above. On the embedded
  local Spark (``local[N]``) the executors live in the driver's JVM, so a task's failure,
  with the Python worker's traceback, is logged here by ``Executor`` and
  ``TaskSetManager``. The driver writes it into the sandbox's ``logs`` directory
  (``driver_log_path``). On a cluster the driver is the cluster's Spark Connect server:
  ``driver.log`` is then what its log gained during the attempt;
- ``executor-<worker>-<executor id>.log``: for a run on a local cluster, the ``stderr`` of
  each executor of the cluster's Spark Connect application, which the standalone worker
  keeps in its work directory (``<cluster dir>/work-<i>/<app id>/<executor id>/stderr``,
  ``clusters.backends.local``). Only that application's, of that cluster, whose owner is
  the run's (``LocalExecutor.acquire_target`` refuses others'). On a running cluster the
  application is shared by the owner's sessions: only what was written during the
  attempt is collected, which may still hold lines of the owner's concurrent sessions.

A run on EMR (``EmrExecutor``) is its cluster's one step: its logs are the step's
``step-stderr.log`` (papermill's output, the kernel's and the driver's stderr),
``step-stdout.log`` and ``step-controller.log``, read from where EMR copies them in S3
(``StepLogCollector``, ``clusters.emr_logs``).

Files are read by the worker (root) in directories user code can write, so they are
opened beneath a known root without following any symlink, must be regular files, and
must belong to the sandbox's uid or the worker's own (``open_beneath``): user code
cannot make the worker read another user's file, or a root-only one, into its logs.

Each log keeps at most ``MAX_BYTES``: its tail, after a line saying how much was cut.
Secrets the portal knows (``known_secrets``) are replaced by ``MASK`` before anything is
stored, so nothing unmasked ever reaches storage, a page or the API.

Stored as ``runs/<run uuid>/logs/<name>`` (``storage_key``): while the run runs, every
``UPLOAD_INTERVAL`` seconds by its heartbeat (fenced: only while the attempt owns the
run); at the end of the attempt, once more, removing names that attempt did not write.
Their bytes count in ``Run.output_bytes`` (the Usage page, fair share), and retention
deletes them with the outputs (``jobs.services.retention``).

Who may read them: the job's owner and staff (``Run.objects.owned_by``), even for a job
shared with everyone signed in. Logs show the run's environment and, on a running cluster,
lines of the owner's other sessions: more than the output its owner chose to share.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from portal.env import env_list

if TYPE_CHECKING:
    from clusters.models import Cluster
    from jobs.models import Run
    from portal.sandbox import Sandbox

log = logging.getLogger(__name__)

#: Bytes each log keeps (its tail).
MAX_BYTES = 2 * 2**20
#: Executor logs collected per run at most (a cluster of many executors).
MAX_EXECUTOR_LOGS = 32
#: Seconds between two uploads of a running attempt's logs.
UPLOAD_INTERVAL = 5.0
#: What a masked secret becomes.
MASK = "********"
#: Secrets shorter than this are not masked: masking "ab" everywhere would hide the logs,
#: and so short a value protects nothing.
MIN_SECRET_CHARS = 4
#: The shape of an API token (``api.models.TOKEN_PREFIX`` and 43 URL-safe characters).
_API_TOKEN = r"pap_[A-Za-z0-9_-]{16,}"
#: A log's name in storage, in URLs and on the page.
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\.log$")
_EXECUTOR_ID = re.compile(r"^[0-9]{1,9}$")
_WORK_DIR = re.compile(r"^work-([0-9]{1,4})$")
_APP_ID = re.compile(r"^app-[0-9]{14}-[0-9]{4,}$")

KERNEL = "kernel.log"
DRIVER = "driver.log"

#: A run on EMR: its step's logs (``StepLogCollector``), by EMR's file name.
STEP_LOGS = {
    "stderr": "step-stderr.log",
    "stdout": "step-stdout.log",
    "controller": "step-controller.log",
}
#: Seconds between two collections of a running EMR step's logs (each is S3 requests, and
#: EMR copies the logs to S3 only every few minutes).
STEP_UPLOAD_INTERVAL = 60.0

#: Order on the page: kernel, driver (or the EMR step's stderr, stdout, controller), then
#: executors by name.
_ORDER = {KERNEL: 0, DRIVER: 1, **{name: i for i, name in enumerate(STEP_LOGS.values())}}


# --- Masking ---------------------------------------------------------------------------------


def _password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def known_secrets(cluster: Cluster | None = None) -> list[str]:
    """The secret values this process knows that a run's logs might show: SECRET_KEY,
    METRICS_TOKEN, the e-mail and OpenID Connect passwords, the passwords in REDIS_URL and
    the broker URL, the database password, AWS credentials (the worker's ``AWS_*KEY*``,
    ``*SECRET*`` and ``*TOKEN*`` variables, and S3 storage options), the values of the
    variables named in KERNEL_ENV_EXTRA, and ``cluster``'s Spark Connect token. Empty
    values are left out; percent-encoded forms are added."""
    values: list[str] = [
        settings.SECRET_KEY,
        getattr(settings, "METRICS_TOKEN", None) or "",
        getattr(settings, "EMAIL_HOST_PASSWORD", None) or "",
        _password(settings.REDIS_URL),
        _password(getattr(settings, "CELERY_BROKER_URL", "") or ""),
    ]
    for db in settings.DATABASES.values():
        values.append(db.get("PASSWORD") or "")
    for provider in getattr(settings, "SOCIALACCOUNT_PROVIDERS", {}).values():
        values += [app.get("secret") or "" for app in provider.get("APPS", [])]
    storage = cast(dict[str, Any], settings.STORAGES.get("default") or {})
    options = cast(dict[str, Any], storage.get("OPTIONS") or {})
    values += [str(options.get(k) or "") for k in ("access_key", "secret_key", "security_token")]
    for name, value in os.environ.items():
        if name.startswith("AWS_") and any(w in name for w in ("KEY", "SECRET", "TOKEN")):
            values.append(value)
    values += [os.environ.get(name, "") for name in env_list("KERNEL_ENV_EXTRA")]
    if cluster is not None:
        values.append(cluster.connect_token)
    found: set[str] = set()
    for value in values:
        if value:
            found.update({value, unquote(value)})
    return sorted(found)


class Masker:
    """Replaces each of ``secrets`` (of at least MIN_SECRET_CHARS characters) and every
    API-token-shaped string by MASK."""

    def __init__(self, secrets: Iterable[str]):
        kept = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._pattern = re.compile("|".join([*map(re.escape, kept), _API_TOKEN]))

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by MASK."""
        return self._pattern.sub(MASK, text)


# --- Reading files user code can write ------------------------------------------------------


def open_beneath(root: Path, parts: Iterable[str], uids: set[int]) -> int | None:
    """A read-only descriptor of ``root/<parts...>``, reached without following a symlink
    at any step below ``root``, if it is a regular file owned by one of ``uids``; None
    otherwise (missing, a symlink, a FIFO, another uid's file)."""
    parts = list(parts)
    directory = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root, directory)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            inner = os.open(part, directory, dir_fd=fd)
            os.close(fd)
            fd = inner
        found = os.open(
            parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd
        )
    except OSError:
        return None
    finally:
        os.close(fd)
    info = os.fstat(found)
    if not stat.S_ISREG(info.st_mode) or info.st_uid not in uids:
        os.close(found)
        return None
    return found


def _size_beneath(root: Path, parts: Iterable[str], uids: set[int]) -> int:
    fd = open_beneath(root, parts, uids)
    if fd is None:
        return 0
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_tail(fd: int, start: int = 0, max_bytes: int | None = None) -> tuple[bytes, int]:
    """The bytes of the open file ``fd`` from offset ``start``, at most the last
    ``max_bytes`` (default MAX_BYTES) of them; and how many bytes before those were cut (0
    if none). A file shorter than ``start`` (rotated, truncated) is read from its
    beginning."""
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    size = os.fstat(fd).st_size
    if size < start:
        start = 0
    begin = max(start, size - max_bytes)
    chunks, left, offset = [], size - begin, begin
    while left > 0:
        chunk = os.pread(fd, min(left, 2**20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        left -= len(chunk)
    return b"".join(chunks), begin - start


def as_text(data: bytes, cut: int, masker: Masker) -> str:
    """A log's bytes as masked text. When ``cut`` bytes were cut before them, the first,
    partial line goes too (a secret cut in half would escape the mask), and a first line
    says so."""
    text = data.decode("utf-8", errors="replace")
    if cut:
        newline = text.find("\n")
        text = text[newline + 1 :] if newline >= 0 else ""
        text = f"[log cut: only the last {MAX_BYTES // 2**20} MiB are kept]\n{text}"
    return masker.mask(text)


# --- Where a run's logs are ---------------------------------------------------------------------


def kernel_log_path(sandbox: Sandbox) -> Path:
    """Where the kernel's stdout and stderr go: in the sandbox's own directory, which the
    sandbox does not see."""
    return sandbox.dir / KERNEL


def logs_dir(sandbox_root: Path | str, name: str) -> Path:
    """The directory of sandbox ``name`` where its processes write their logs (bound
    writable inside, owned by its uid)."""
    return Path(sandbox_root) / name / "logs"


def driver_log_path(sandbox: Sandbox) -> Path:
    """Where the Spark driver of the sandbox's kernel writes its log4j output (the
    ``PORTAL_DRIVER_LOG`` of the kernel's environment)."""
    return logs_dir(settings.SANDBOX_ROOT, sandbox.spec.name) / DRIVER


@dataclass
class Source:
    """One log file: ``parts`` below ``root``, read from byte ``start``."""

    name: str
    root: Path
    parts: tuple[str, ...]
    start: int = 0


@dataclass
class Collector:
    """Collects, masks and stores the logs of one attempt of ``run``.

    ``sources`` are the files always read; with ``cluster_dir`` and ``app_id``, the
    executors' ``stderr`` of that application are found on each collection, read from the
    offsets ``starts`` recorded when the attempt began (``for_attempt``). ``uids`` are the
    owners a file may have.
    """

    run: Run
    masker: Masker
    uids: set[int]
    sources: list[Source] = field(default_factory=list)
    cluster_dir: Path | None = None
    app_id: str = ""
    starts: dict[str, int] = field(default_factory=dict)
    uploaded_at: float = 0.0
    stored: set[str] = field(default_factory=set)
    #: Seconds between two ``maybe_upload`` uploads.
    upload_interval: ClassVar[float] = UPLOAD_INTERVAL

    @classmethod
    def for_attempt(
        cls, run: Run, sandbox: Sandbox, cluster: Cluster | None = None, *, fresh: bool = False
    ) -> Collector:
        """The collector of an attempt of ``run`` in ``sandbox``, on ``cluster`` (a local
        one) if any; ``fresh`` when the cluster was started for the run (its logs are
        collected whole; on a running cluster, from their size now)."""
        uids = {os.geteuid()}
        if sandbox.enabled:
            uids.add(sandbox.spec.uid)
        driver = driver_log_path(sandbox)
        driver.parent.mkdir(parents=True, exist_ok=True)  # made by prepare() when sandboxed
        collector = cls(run=run, masker=Masker(known_secrets(cluster)), uids=uids)
        collector.sources.append(Source(KERNEL, sandbox.dir, (KERNEL,)))
        if cluster is None:
            collector.sources.append(Source(DRIVER, driver.parent, (DRIVER,)))
            return collector
        info = cluster.backend_info or {}
        if not info.get("dir"):
            return collector
        collector.cluster_dir = Path(info["dir"])
        if info.get("uid"):
            collector.uids.add(int(info["uid"]))
        connect = Source(DRIVER, collector.cluster_dir, ("logs", "connect.log"))
        collector.app_id = connect_app_id(cluster)
        if not fresh:
            connect.start = _size_beneath(connect.root, connect.parts, collector.uids)
            for source in collector.executor_sources():
                collector.starts[source.name] = _size_beneath(
                    source.root, source.parts, collector.uids
                )
        collector.sources.append(connect)
        return collector

    def executor_sources(self) -> list[Source]:
        """The ``stderr`` of each executor of the application, at most
        MAX_EXECUTOR_LOGS, named ``executor-<worker>-<executor id>.log``."""
        if self.cluster_dir is None or not _APP_ID.match(self.app_id):
            return []
        found = []
        try:
            workers = sorted(os.listdir(self.cluster_dir))
        except OSError:
            return []
        for work in workers:
            match = _WORK_DIR.match(work)
            if not match:
                continue
            try:
                executors = os.listdir(self.cluster_dir / work / self.app_id)
            except OSError:
                continue
            for executor_id in sorted(e for e in executors if _EXECUTOR_ID.match(e)):
                name = f"executor-{match[1]}-{executor_id}.log"
                parts = (work, self.app_id, executor_id, "stderr")
                found.append(Source(name, self.cluster_dir, parts, self.starts.get(name, 0)))
        return found[:MAX_EXECUTOR_LOGS]

    def collect(self) -> dict[str, str]:
        """Each log's masked, capped text, by name (logs with nothing to show left out)."""
        texts = {}
        for source in [*self.sources, *self.executor_sources()]:
            fd = open_beneath(source.root, source.parts, self.uids)
            if fd is None:
                continue
            try:
                data, cut = read_tail(fd, source.start)
            finally:
                os.close(fd)
            if data:
                texts[source.name] = as_text(data, cut, self.masker)
        return texts

    def maybe_upload(self) -> None:
        """``upload`` if ``upload_interval`` seconds passed since the last one; errors are
        logged (the live view may lag, the run goes on)."""
        if time.monotonic() - self.uploaded_at < self.upload_interval:
            return
        self.uploaded_at = time.monotonic()
        try:
            self.upload()
        except Exception:
            log.exception("could not store the logs of run=%s", self.run.pk)

    def upload(self, final: bool = False) -> int:
        """Store the logs as they are now and record their bytes in ``output_bytes``, only
        while this attempt owns the RUNNING run (whose other files are not stored yet; a
        race with a reaper between the check and the writes is accepted: the logs are the
        same run's). ``final``: also delete the stored logs this attempt did not write (an
        earlier attempt's). Returns the bytes stored (0 when the run is not this
        attempt's)."""
        from jobs.models import Run

        mine = Run.objects.filter(pk=self.run.pk, attempt=self.run.attempt, state=Run.State.RUNNING)
        if not mine.exists():
            return 0  # a later attempt, or the reaper, has the run: its logs are not ours
        texts = self.collect()
        total = 0
        for name, text in texts.items():
            data = text.encode("utf-8")
            total += len(data)
            key = storage_key(self.run, name)
            if default_storage.exists(key):
                default_storage.delete(key)
            default_storage.save(key, ContentFile(data))
        self.stored |= texts.keys()
        if final:
            for entry in stored_logs(self.run):
                if entry.name not in texts:
                    default_storage.delete(storage_key(self.run, entry.name))
        mine.update(output_bytes=total)
        return total


@dataclass
class StepLogCollector(Collector):
    """Collects, masks and stores the logs of an attempt of ``run`` executed as step
    ``step_id`` of EMR job flow ``jobflow_id`` (``jobs.services.executors.EmrExecutor``):
    ``stderr``, ``stdout`` and ``controller`` from ``<EMR_LOG_URI><job flow id>/steps/<step
    id>/`` (``clusters.emr_logs``), stored as STEP_LOGS names. Storing, fencing and
    ``output_bytes`` are ``Collector``'s.

    EMR copies a step's logs to S3 every few minutes and when the step ends, often after
    the attempt has ended: what is not there yet when the attempt ends is not collected
    (accepted: the cluster's page lists them all later, ``clusters.emr_logs``). Until the
    step id is known (``step_id`` empty) nothing is collected."""

    s3: Any = None
    jobflow_id: str = ""
    step_id: str = ""
    upload_interval: ClassVar[float] = STEP_UPLOAD_INTERVAL

    @classmethod
    def for_step(cls, run: Run, cluster: Cluster, s3: Any, jobflow_id: str) -> StepLogCollector:
        """The collector of ``run``'s attempt on ``cluster`` (EMR job flow
        ``jobflow_id``), reading S3 with ``s3``; set ``step_id`` once EMR names it."""
        return cls(
            run=run,
            masker=Masker(known_secrets(cluster)),
            uids=set(),
            s3=s3,
            jobflow_id=jobflow_id,
        )

    def collect(self) -> dict[str, str]:
        """Each step log's masked, capped text, by STEP_LOGS name (logs EMR has not
        written yet, or that are empty, left out). Raises botocore's errors but NoSuchKey."""
        from botocore.exceptions import ClientError

        from clusters import emr_logs

        if not self.step_id:
            return {}
        location = emr_logs.log_location(self.jobflow_id)
        texts = {}
        for emr_name, name in STEP_LOGS.items():
            key = emr_logs.key_for(location, f"steps/{self.step_id}/{emr_name}.gz")
            try:
                text = emr_logs.log_text(self.s3, location.bucket, key, self.masker)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    continue
                raise
            if text:
                texts[name] = text
        return texts


def connect_app_id(cluster: Cluster) -> str:
    """The application id of ``cluster``'s Spark Connect server, from its master's
    status; "" when the master does not answer."""
    from clusters.backends.local import LocalBackend

    wanted = f"Spark Connect ({cluster.name})"
    for app in LocalBackend().applications(cluster):
        if app.get("name") == wanted and app.get("state") == "RUNNING":
            return str(app.get("id") or "")
    return ""


# --- Stored logs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredLog:
    """A stored log of a run: its ``name`` and size in ``bytes``."""

    name: str
    bytes: int


def storage_prefix(run: Run) -> str:
    """The storage directory of ``run``'s logs."""
    return f"runs/{run.uuid}/logs"


def storage_key(run: Run, name: str) -> str:
    """The storage key of ``run``'s log ``name``. Raises ValueError for a name that is
    not a log's (NAME)."""
    if not NAME.match(name):
        raise ValueError(f"not a log name: {name!r}")
    return f"{storage_prefix(run)}/{name}"


def stored_logs(run: Run) -> list[StoredLog]:
    """``run``'s stored logs: kernel, driver, then executors by name. Empty when there are
    none (or storage cannot list them)."""
    try:
        _, names = default_storage.listdir(storage_prefix(run))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        if NAME.match(name):
            try:
                size = default_storage.size(storage_key(run, name))
            except (FileNotFoundError, OSError):
                continue
            found.append(StoredLog(name, size))
    return sorted(found, key=lambda e: (_ORDER.get(e.name, 2), e.name))


def stored_bytes(run: Run) -> int:
    """Bytes of ``run``'s stored logs."""
    return sum(entry.bytes for entry in stored_logs(run))


def read_stored(run: Run, name: str, max_bytes: int | None = None) -> str | None:
    """The text of ``run``'s stored log ``name`` (its last ``max_bytes`` when given,
    from a line start), or None when there is no such log."""
    try:
        key = storage_key(run, name)
    except ValueError:
        return None
    if not default_storage.exists(key):
        return None
    with default_storage.open(key, "rb") as fh:
        size = default_storage.size(key)
        if max_bytes is not None and size > max_bytes:
            fh.seek(size - max_bytes)
            text = fh.read().decode("utf-8", errors="replace")
            return text[text.find("\n") + 1 :]
        return fh.read().decode("utf-8", errors="replace")


def delete_stored(run: Run) -> None:
    """Delete ``run``'s stored logs. Storage errors are raised (retention retries)."""
    for entry in stored_logs(run):
        default_storage.delete(storage_key(run, entry.name))
