"""The state of one attempt of a run, shared by the steps of ``execute_run`` and by the
executors: the run, its working directory and notebook, its Spark target, its heartbeat
and the live view's partial output.

One ``Attempt`` replaces state that was passed around as closures and tuples; it is
created by ``Attempt.workspace`` and lives as long as the attempt's temporary directory.
(Read the Docs' ``TaskData`` is the model: one object per execution of a build.)
"""

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from clusters.models import Cluster
from jobs import render
from jobs.executor import Progress, TickAnswer
from jobs.models import Run
from jobs.stream_progress import ProgressTail

log = logging.getLogger(__name__)


class SparkTargetError(Exception):
    """The job's Spark target cannot be used for this run; the message says why.

    ``retry`` is True when a later attempt may succeed (a fresh cluster failed to start).
    """

    def __init__(self, message: str, retry: bool = False):
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class SparkTarget:
    """Where an attempt's Spark session runs.

    ``master`` is what the kernel connects to: a ``local[N]`` master, a Spark Connect URL
    (``sc://...``) or ``yarn`` on EMR. ``cluster`` is the cluster used (None for the
    embedded local Spark); ``owned`` says it was started for this run and ends with it.
    """

    master: str
    cluster: Cluster | None = None
    owned: bool = False


class PartialUploader:
    """Stores the rendered partial output of a running attempt for the live view.

    Rendering costs more as the notebook grows and competes with the kernel's client for
    the GIL, so after each render it waits ten times as long as the render took before the
    next one. Each upload replaces the previous file (one key per run) and records the key
    on the run, fenced by the attempt.
    """

    def __init__(self, run: Run, path: Path):
        self.run = run
        self.path = path
        self.version = 0
        self.key = ""
        self.next_at = 0.0

    def maybe_upload(self, progress: Progress) -> None:
        """Render and store the partial notebook if it changed since the last upload and
        the wait after the last render is over."""
        now = time.monotonic()
        if progress.partial_version == self.version or not self.path.exists():
            return
        if now < self.next_at:
            return
        self.version = progress.partial_version
        key = self._store()
        self.next_at = time.monotonic() + 10 * (time.monotonic() - now)
        if key:
            self.key = key
            Run.objects.filter(pk=self.run.pk, attempt=self.run.attempt).update(partial_key=key)

    def _store(self) -> str | None:
        """Render the partial notebook to HTML and store it; the key, or None (logged)
        when the notebook could not be rendered."""
        run = self.run
        try:
            nb = nbformat.read(str(self.path), as_version=4)
            html = render.render_html(nb, title=run.job.name)
        except Exception:
            log.exception("could not render the partial notebook run=%s", run.pk)
            return None
        key = self.key or f"runs/{run.uuid}/partial.html"
        if default_storage.exists(key):
            default_storage.delete(key)
        return default_storage.save(key, ContentFile(html.encode("utf-8")))


def record_stream_progress(run: Run, tail: ProgressTail) -> bool:
    """Store the live metrics ``tail`` has read on ``run``'s row (``Run.stream_progress``,
    ``last_batch_at``, ``stream_event_at``), fenced like the heartbeat: only while this
    attempt owns the RUNNING run. Returns whether it did."""
    mine = Run.objects.filter(pk=run.pk, attempt=run.attempt, state=Run.State.RUNNING)
    return bool(
        mine.update(
            stream_progress=tail.stored(),
            last_batch_at=tail.last_batch_at,
            stream_event_at=tail.last_event_at,
        )
    )


@dataclass
class Attempt:
    """One attempt of a run, from its claim to its outcome.

    ``workdir`` is a temporary directory of the worker's (never seen by the kernel, whose
    sandbox has its own scratch); ``source`` the notebook version copied into it;
    ``heartbeat(progress)`` records progress and says whether to go on (it also drives the
    partial uploads); ``target`` is set once the attempt has a Spark target;
    ``cpu_seconds`` by the executor once its sandbox is gone (None where the host does not
    account CPU time, ``quotas.usage.record_run_usage``).
    """

    run: Run
    workdir: Path
    source: Path
    partial: PartialUploader
    heartbeat: Callable[[Progress], TickAnswer]
    target: SparkTarget | None = None
    cpu_seconds: float | None = None

    @classmethod
    @contextmanager
    def workspace(
        cls, run: Run, heartbeat: Callable[["Attempt", Progress], TickAnswer]
    ) -> Iterator["Attempt"]:
        """A temporary directory holding the run's notebook version, removed afterwards;
        ``heartbeat(attempt, progress)`` becomes the attempt's heartbeat."""
        with tempfile.TemporaryDirectory(prefix=f"run-{run.pk}-") as tmp:
            workdir = Path(tmp)
            source = workdir / "input.ipynb"
            with default_storage.open(run.version.storage_key, "rb") as fh:
                source.write_bytes(fh.read())
            attempt = cls(
                run=run,
                workdir=workdir,
                source=source,
                partial=PartialUploader(run, workdir / "partial.ipynb"),
                heartbeat=lambda progress: heartbeat(attempt, progress),
            )
            yield attempt

    @property
    def output(self) -> Path:
        """Where the executed notebook is written."""
        return self.workdir / "output.ipynb"

    @property
    def name(self) -> str:
        """The attempt's name in sandboxes and clusters: ``r<run id>-a<attempt>``."""
        return f"r{self.run.pk}-a{self.run.attempt}"
