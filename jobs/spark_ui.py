"""The Spark UI of a run, in the browser, through the portal: live while the run runs on
the embedded local Spark, and as a history view once it has finished.

**Live.** A run on the embedded local Spark (``local[N]``) has its driver, and its Spark
UI, in the kernel's sandbox, whose network namespace has only a loopback interface. The
UI listens there on ``kernel.RUN_SPARK_UI_PORT``; the sandbox's own socat publishes that
port on a unix socket in its ``ipc`` directory (``Sandbox.publish_socket``: 0600, of the
sandbox's uid, in a 0700 directory). ``run_ui`` forwards the owner's requests to that
socket while the run is RUNNING; nothing listens on a TCP port of the host. The UI is not
in reverse-proxy mode: the proxy sends ``X-Forwarded-Context`` with the portal path, and
Spark writes its links under it (``UIUtils.uiRoot``).

**History.** The driver writes its event log into the sandbox's logs directory
(``event_log_conf``). When the attempt ends the worker stores it with the run
(``store_event_log``), rewritten line by line:

- lines that are not JSON objects, and events outside ``ALLOWED_EVENT``, are dropped: the
  History Server deserialises an unknown ``Event`` as a class of that name, and the log
  is written by user code;
- every ``SparkListenerApplicationStart`` gets the run's own application id
  (``history_app_id``), so no user's log can pose as another run's application;
- secrets the portal knows are masked (``jobs.logs.Masker``).

A log over SPARK_EVENT_LOG_MAX_BYTES is not stored. The stored log counts in the run's
``output_bytes`` and expires with its outputs.

A single Spark History Server (``bin/spark-history``: ``manage.py sparkhistory``, in a
sandbox of its own) reads SPARK_HISTORY_DIR, a cache the portal fills from storage when
an owner first opens a run's history (``materialize``). ``run_history`` forwards only
paths of that run's application (``history/<app id>/...``): never the server's listing of
every application, nor its REST API.

Both views follow ``clusters.ui_proxy``'s rules (its module docstring): the job's owner
only (others, staff included, get 404), GET and HEAD, allow-listed headers, a sandboxing
CSP, Spark's static files served by ``ui_proxy.spark_static``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.http import Http404, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_safe

from clusters import ui_proxy
from clusters.ui_proxy import AuthenticatedRequest, PathRefused
from jobs import kernel
from jobs.logs import Masker, open_beneath
from jobs.models import Run

if TYPE_CHECKING:
    from portal.sandbox import Sandbox

log = logging.getLogger(__name__)

#: An event log file the embedded local Spark writes (``local-<ms>``, ``.inprogress``
#: while it runs; ``app-...`` names are accepted too).
EVENT_LOG_NAME = re.compile(r"^(local|app)-[0-9]{1,20}(-[0-9]{1,9})?(\.inprogress)?$")

#: Events kept in a stored log: Spark core's listener events (short names), and the
#: events of Spark's own packages (the SQL tab's, streaming's), by class name.
ALLOWED_EVENT = re.compile(r"^(SparkListener[A-Za-z]+|org\.apache\.spark\.[A-Za-z0-9_.$]+)$")

#: The upstream address of the live UI: only the unix socket is dialled; Spark builds its
#: redirects from this host and port, which ``ui_proxy.location_for`` maps back.
_LIVE_UPSTREAM = ("127.0.0.1", kernel.RUN_SPARK_UI_PORT)


# --- Event logs -------------------------------------------------------------------------------


def event_log_conf(sandbox: Sandbox) -> dict[str, str]:
    """The Spark settings that make a run's local driver write one uncompressed event log
    file into the sandbox's event log directory (made here when the sandbox did not)."""
    directory = kernel.event_log_dir(sandbox.spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": f"file:{directory}",
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }


def history_app_id(run: Run) -> str:
    """The application id of ``run``'s stored event log, e.g. ``run-3f2a...``: its uuid."""
    return f"run-{run.uuid.hex}"


def event_log_key(run: Run) -> str:
    """The storage key of ``run``'s event log."""
    return f"runs/{run.uuid}/spark-events.jsonl"


def event_log_bytes(run: Run) -> int:
    """Bytes of ``run``'s stored event log (0 when there is none)."""
    try:
        return default_storage.size(event_log_key(run))
    except (FileNotFoundError, OSError):
        return 0


def has_event_log(run: Run) -> bool:
    """Whether ``run`` has a stored event log."""
    return default_storage.exists(event_log_key(run))


def delete_event_log(run: Run) -> None:
    """Delete ``run``'s stored event log and its copy in the history cache, if any."""
    default_storage.delete(event_log_key(run))
    (Path(settings.SPARK_HISTORY_DIR) / history_app_id(run)).unlink(missing_ok=True)


def _newest_event_log(directory: Path, uids: set[int]) -> int | None:
    """A descriptor of the newest event log file in ``directory`` (found without following
    symlinks, owned by one of ``uids``), or None."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(directory, flags)
    except OSError:
        return None
    try:
        found = []
        with os.scandir(fd) as entries:
            for entry in entries:
                if EVENT_LOG_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                    found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    finally:
        os.close(fd)
    for _, name in sorted(found, reverse=True):
        log_fd = open_beneath(directory, (name,), uids)
        if log_fd is not None:
            return log_fd
    return None


def rewrite_event_log(line: bytes | str, app_id: str, masker: Masker) -> str | None:
    """One line of an event log as it is stored (see the module docstring), or None to
    drop it."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or not ALLOWED_EVENT.match(str(event.get("Event", ""))):
        return None
    if event["Event"] == "SparkListenerApplicationStart":
        event["App ID"] = app_id
        event.pop("App Attempt ID", None)
    return masker.mask(json.dumps(event, separators=(",", ":")))


def store_event_log(run: Run, sandbox: Sandbox, masker: Masker) -> int:
    """Store the newest event log of ``sandbox``'s local driver as ``run``'s, rewritten
    (module docstring), replacing any earlier attempt's; only while this attempt owns the
    RUNNING run. Returns the bytes stored: 0 when there was no log, the run is not this
    attempt's, or the log passed SPARK_EVENT_LOG_MAX_BYTES (then nothing is stored)."""
    mine = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=Run.State.RUNNING)
    if not mine.exists():
        return 0
    default_storage.delete(event_log_key(run))
    uids = {os.geteuid()}
    if sandbox.enabled:
        uids.add(sandbox.spec.uid)
    fd = _newest_event_log(kernel.event_log_dir(sandbox.spec.name), uids)
    if fd is None:
        return 0
    limit = settings.SPARK_EVENT_LOG_MAX_BYTES
    app_id = history_app_id(run)
    with os.fdopen(fd, "rb") as source, tempfile.TemporaryFile() as out:
        for line in source:
            kept = rewrite_event_log(line, app_id, masker)
            if kept is not None:
                out.write(kept.encode("utf-8") + b"\n")
            if out.tell() > limit:
                log.info("event log of run=%s passed %s bytes: not stored", run.pk, limit)
                return 0
        size = out.tell()
        if size == 0:
            return 0
        out.seek(0)
        default_storage.save(event_log_key(run), File(out))
    return size


# --- The views ----------------------------------------------------------------------------------


def _owned_run(request: AuthenticatedRequest, pk: int) -> Run:
    """Run ``pk`` if the signed-in user owns its job, else Http404 (staff too: the pages
    carry markup the run's notebook controls)."""
    return get_object_or_404(Run.objects.filter(job__owner=request.user), pk=pk)


def live_socket(run: Run) -> Path:
    """Where the current attempt of ``run`` publishes its Spark UI."""
    return Path(settings.SANDBOX_ROOT) / f"r{run.pk}-a{run.attempt}" / "ipc" / "publish.sock"


def has_live_ui(run: Run) -> bool:
    """Whether ``run`` is RUNNING with a published Spark UI socket (the UI itself answers
    once the notebook has started a SparkSession)."""
    if run.state != Run.State.RUNNING:
        return False
    try:
        return stat.S_ISSOCK(os.lstat(live_socket(run)).st_mode)
    except OSError:
        return False


@require_safe
def run_ui(request: AuthenticatedRequest, pk: int, path: str = "") -> HttpResponseBase:
    """The page ``path`` of run ``pk``'s live Spark UI. 404 for anyone but the job's owner
    and when the run is not running with a UI; 400 for a path ``check_path`` refuses; 502
    while the notebook has not started Spark (or has stopped it)."""
    run = _owned_run(request, pk)
    if not has_live_ui(run):
        raise Http404("This run has no Spark UI now.")
    try:
        upstream_path = ui_proxy.check_path(path)
    except PathRefused:
        return ui_proxy.refused("This path does not lead into the run's Spark UI.", 400)
    host, port = _LIVE_UPSTREAM
    url = httpx.URL(scheme="http", host=host, port=port, path=upstream_path)
    query = request.META.get("QUERY_STRING", "")
    if query:
        url = url.copy_with(query=query.encode())
    prefix = reverse("runs-ui", args=[run.pk]).rstrip("/")
    return ui_proxy.forward(
        request,
        url,
        prefix,
        what="run",
        ident=run.pk,
        transport=httpx.HTTPTransport(uds=str(live_socket(run))),
        forwarded_context=True,
    )


def materialize(run: Run) -> str:
    """Put ``run``'s stored event log into SPARK_HISTORY_DIR (once; readable by the
    History Server's sandbox) and return its application id. Raises Http404 when the run
    has none."""
    app_id = history_app_id(run)
    directory = Path(settings.SPARK_HISTORY_DIR)
    target = directory / app_id
    if target.exists():
        return app_id
    directory.mkdir(parents=True, exist_ok=True)
    try:
        source = default_storage.open(event_log_key(run), "rb")
    except FileNotFoundError:
        raise Http404("This run has no Spark history.") from None
    with source, tempfile.NamedTemporaryFile(dir=directory, prefix=".", delete=False) as out:
        for chunk in iter(lambda: source.read(2**20), b""):
            out.write(chunk)
    os.chmod(out.name, 0o644)
    os.replace(out.name, target)
    return app_id


def _history_url(path: str, query: str = "") -> httpx.URL:
    url = httpx.URL(
        scheme="http", host=settings.SPARK_HISTORY_HOST, port=settings.SPARK_HISTORY_PORT, path=path
    )
    return url.copy_with(query=query.encode()) if query else url


def wait_until_listed(app_id: str, timeout: float) -> bool:
    """Whether the History Server lists ``app_id`` within ``timeout`` seconds (it scans
    SPARK_HISTORY_DIR every second or so)."""
    deadline = time.monotonic() + timeout
    url = _history_url(f"/api/v1/applications/{app_id}")
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        while True:
            try:
                if client.get(url).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)


@require_safe
def run_history(request: AuthenticatedRequest, pk: int, path: str = "") -> HttpResponseBase:
    """The page ``path`` of the Spark history of finished run ``pk``'s application; the
    bare prefix redirects to its jobs page. 404 for anyone but the job's owner, for a run
    that has not finished or has no stored event log, and for any path but that
    application's; 502 when the History Server does not answer (or does not list the
    application within SPARK_HISTORY_WAIT seconds)."""
    run = _owned_run(request, pk)
    if run.state not in Run.FINAL_STATES or not has_event_log(run):
        raise Http404("This run has no Spark history.")
    app_id = history_app_id(run)
    prefix = reverse("runs-history", args=[run.pk]).rstrip("/")
    if not path:
        return HttpResponseRedirect(f"{prefix}/history/{app_id}/jobs/")
    try:
        upstream_path = ui_proxy.check_path(path)
    except PathRefused:
        return ui_proxy.refused("This path does not lead into the run's Spark history.", 400)
    if not upstream_path.startswith(f"/history/{app_id}/"):
        raise Http404("Only this run's application is here.")
    fresh = not (Path(settings.SPARK_HISTORY_DIR) / app_id).exists()
    materialize(run)
    if fresh and not wait_until_listed(app_id, settings.SPARK_HISTORY_WAIT):
        return ui_proxy.refused("The Spark History Server does not answer.", 502)
    url = _history_url(upstream_path, request.META.get("QUERY_STRING", ""))
    return ui_proxy.forward(
        request, url, prefix, what="run history", ident=run.pk, forwarded_context=True
    )
