"""Execute one notebook with papermill in the portal kernel, watched by a monitor thread.

This module knows nothing of the database: ``jobs.services`` gives it a ``tick`` callback
that records the heartbeat and progress and says whether to stop (a ``TickAnswer``), and
an ``on_monitor_exit`` callback for the monitor thread's own clean-up. The contract:

- papermill runs the notebook in the calling thread, in the kernel of ``jobs.kernel``
  started inside ``sandbox`` (``jobs.provisioner``), with ``parameters`` injected after
  the ``parameters`` cell, and an environment built only from ``kernel_env`` (nothing else
  of the worker's environment leaks in);
- nbclient hooks (called inside nbclient's event loop, so they must not touch the
  Django ORM) update a ``Progress`` object and save the partial output notebook at most
  every ``partial_interval`` seconds;
- a monitor thread calls ``tick(progress)`` every ``tick_interval`` seconds, and kills the
  whole sandbox (kernel, Spark driver JVM, Python workers, anything they started) when the run
  passes ``timeout_seconds``, when ``tick`` answers CANCEL or LOST, or when ``tick``
  has failed for longer than ``lease_seconds`` (the database is unreachable, so another
  worker may already have taken the run over);
- a kernel that the sandbox's cgroup killed for passing its memory limit ends FAILED
  with "memory limit exceeded (N GiB)": the notebook's doing, so not retried;
- the output the worker keeps is bounded in its own client (``PortalNotebookClient``),
  where the kernel cannot reach: stream output per cell is cut with a marker and the run
  goes on; past the notebook's limit the kernel is killed and the run ends FAILED with
  "output exceeded 100 MB", keeping what was kept; a single message over that limit is
  never read (``BoundedKernelClient``, ``LinkWatch``);
- a failure's summary is never empty: papermill reports a cell that failed without an
  ``error`` output (IPython's ``UsageError`` of an unknown magic only prints to stderr) as
  "CellExecutionError" with no message, so the summary takes the exception from the
  cell's execute reply, or else the last lines of its stderr (``summarise_error``);
- papermill's rules otherwise hold: ``SystemExit`` with no code or code 0 stops the
  notebook there as a success, any other code is a failure; a notebook without a
  ``parameters`` cell gets its parameters injected at the top;
- the result is an ``Outcome``; this function never raises for notebook or kernel
  failures.
"""

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import nbformat
import papermill
import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from nbclient.exceptions import CellExecutionError
from nbclient.util import run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from papermill.utils import merge_kwargs, remove_args
from traitlets import Integer
from traitlets.config import Config
from zmq.utils.monitor import recv_monitor_message

from jobs import kernel
from jobs.kernel import OutputLimits
from jobs.provisioner import SandboxKernelManager
from portal.sandbox import Sandbox

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class OutcomeStatus(StrEnum):
    """How an attempt's execution ended."""

    SUCCEEDED = "succeeded"
    #: The notebook raised (or passed its memory limit): the notebook's doing, not retried.
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    #: The run was taken away from this worker (reaped, deleted, database unreachable).
    LOST = "lost"
    #: The kernel died or could not start, or the cluster failed: worth a retry.
    INFRA_ERROR = "infra_error"


class TickAnswer(StrEnum):
    """What the run's owner (the database) answers to each heartbeat."""

    CONTINUE = "continue"
    CANCEL = "cancel"
    LOST = "lost"
    #: Stop gracefully (a continuous run): write the stop flag and let the notebook end.
    STOP = "stop"


#: The outcome a stopping answer leads to.
STOPPED_BY = {TickAnswer.CANCEL: OutcomeStatus.CANCELLED, TickAnswer.LOST: OutcomeStatus.LOST}


def stop_message(status: OutcomeStatus, timeout_seconds: float) -> str:
    """The run's message when it was stopped (TIMED_OUT, CANCELLED or LOST), the same for
    every executor."""
    return {
        OutcomeStatus.TIMED_OUT: f"Stopped after the timeout of {timeout_seconds:g} s.",
        OutcomeStatus.CANCELLED: "Cancelled on request.",
        OutcomeStatus.LOST: (
            "This worker lost the run (it was reaped or the database was unreachable)."
        ),
    }[status]


@dataclass
class Progress:
    """What the run is doing, shared between the executing thread and the monitor.

    Plain attribute writes are atomic under the GIL; readers may see a value one cell old.
    """

    cells_total: int = 0
    cells_done: int = 0
    current_index: int | None = None
    current_head: str = ""
    started: float = field(default_factory=time.monotonic)
    partial_saved_at: float = 0.0
    partial_version: int = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Outcome:
    """How an execution ended.

    ``status`` is an ``OutcomeStatus``. ``output_path`` is the executed notebook when one
    was written. For FAILED, ``error`` holds ``cell_index`` (in the output notebook),
    ``ename``, ``evalue`` and ``traceback`` (plain text). ``message`` is for people.
    """

    status: OutcomeStatus
    output_path: Path | None = None
    error: dict = field(default_factory=dict)
    message: str = ""
    progress: Progress | None = None
    #: The notebook ended after it was asked to stop gracefully (``TickAnswer.STOP``).
    stopped: bool = False


# --- Output limits --------------------------------------------------------------------------
# The kernel runs user code: it may print a gigabyte, send one huge message or flood widget
# state. Everything is bounded here, in the worker's client, where the kernel cannot reach.

#: Room for a message's envelope (header, parent header, metadata) above its output.
_ENVELOPE_BYTES = 2**20
#: How long a dropped connection to the kernel may go without a reconnection attempt
#: before it counts as cut for a message over the size limit (seconds).
_CUT_AFTER = 0.5


def size_words(n_bytes: int) -> str:
    """A byte count as people read it: "10 MB", "1.5 GB", "512 KB", "100 bytes"
    (binary units, as the settings parse them)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes} bytes"


def text_bytes(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (without copying it when it is ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def value_bytes(value: Any) -> int:
    """Approximate bytes of a JSON value (strings in UTF-8, 8 per number), walked without
    recursion (a hostile message may be nested deeply)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += text_bytes(item)
        elif isinstance(item, dict):
            total += 2 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            total += len(item) * 4 // 3  # stored as base64
        else:
            total += 8
    return total


def _utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` that takes at most ``max_bytes`` in UTF-8."""
    if max_bytes <= 0:
        return ""
    if text.isascii():
        return text[:max_bytes]
    return text.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")


@dataclass(frozen=True)
class CellFailure:
    """Why a cell failed, as its execute reply and its stderr tell it (``ename`` and
    ``evalue`` are empty when the reply had none)."""

    ename: str = ""
    evalue: str = ""
    stderr: str = ""


#: papermill's exception name for a cell that failed without an ``error`` output.
NO_ERROR_OUTPUT = "CellExecutionError"
#: Lines of a cell's stderr that stand in for a missing exception message.
STDERR_TAIL_LINES = 5
#: Characters of that tail.
STDERR_TAIL_CHARS = 2000
#: "Name: message", the last line of an exception IPython printed to stderr.
_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.*)")


def summarise_error(error: dict, failure: CellFailure | None) -> dict:
    """``error`` (``cell_index``, ``ename``, ``evalue``, ``traceback`` as papermill reported
    a failure) with a message that is never empty.

    papermill names a failure without an ``error`` output "CellExecutionError" with an
    empty value. Then the name and value come from the cell's execute reply when it has
    them (``UsageError: Line magic function `%x` not found.``); else from the last line of
    its stderr when it reads "SomeError: message"; else the value is the last
    STDERR_TAIL_LINES lines of stderr, or a sentence saying the cell printed nothing. An
    empty traceback becomes that stderr tail. Any other error is returned unchanged.
    """
    ename, evalue = error.get("ename") or "", error.get("evalue") or ""
    if ename and not (ename == NO_ERROR_OUTPUT and not evalue):
        return error
    failure = failure or CellFailure()
    lines = [line for line in _ANSI.sub("", failure.stderr).splitlines() if line.strip()]
    tail = "\n".join(lines[-STDERR_TAIL_LINES:])[-STDERR_TAIL_CHARS:]
    # nbclient names an exception "<Error>" when the reply had none.
    if failure.ename and failure.ename != "<Error>":
        ename, evalue = failure.ename, failure.evalue or tail
    elif lines and (match := _EXCEPTION_LINE.fullmatch(lines[-1].strip())):
        ename, evalue = match[1], match[2]
    else:
        ename = ename or NO_ERROR_OUTPUT
        evalue = tail or "The cell failed without an error message or any output on stderr."
    return {**error, "ename": ename, "evalue": evalue, "traceback": error.get("traceback") or tail}


def _stderr_of(cell: Any) -> str:
    return "".join(
        o.get("text", "")
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stderr"
    )


@dataclass
class _CellOutput:
    """What one cell keeps: its output bytes, its stream bytes and what was cut."""

    kept: int = 0
    stream: int = 0
    dropped: int = 0
    marker: Any = None


class LinkWatch:
    """Watches the client's sockets for a connection cut by ZMQ's ``MAXMSGSIZE``.

    ZMQ drops a connection whose peer sends a message over the socket's ``MAXMSGSIZE``
    without reading it (so the worker never holds it) and, as for a protocol error, does
    not reconnect. A kernel that exits closes its end instead, and ZMQ then schedules a
    reconnection at once. So a disconnection with no reconnection attempt within
    ``_CUT_AFTER`` seconds is a message over the limit: ``on_cut()`` is called (once),
    from this watcher's thread.
    """

    def __init__(self, context: zmq.Context, sockets: list[Any], on_cut: Callable[[], None]):
        self.on_cut = on_cut
        self._context: zmq.Context = zmq.Context.shadow(context.underlying)
        self._stop = threading.Event()
        self._addresses: list[str] = []
        events = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECT_DELAYED
        for sock in sockets:
            address = f"inproc://portal-link-watch-{id(self)}-{len(self._addresses)}"
            sock.monitor(address, events)
            self._addresses.append(address)
        self._thread = threading.Thread(target=self._run, name="run-link-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        monitors = []
        poller = zmq.Poller()
        for address in self._addresses:
            monitor = self._context.socket(zmq.PAIR)
            monitor.linger = 0
            monitor.connect(address)
            poller.register(monitor, zmq.POLLIN)
            monitors.append(monitor)
        cut_since: dict[Any, float] = {}
        try:
            while not self._stop.is_set():
                for monitor, _ in poller.poll(100):
                    event = recv_monitor_message(monitor)["event"]
                    if event == zmq.EVENT_DISCONNECTED:
                        cut_since[monitor] = time.monotonic()
                    elif event in (zmq.EVENT_CONNECT_RETRIED, zmq.EVENT_CONNECT_DELAYED):
                        cut_since.pop(monitor, None)
                now = time.monotonic()
                if any(now - since > _CUT_AFTER for since in cut_since.values()):
                    self.on_cut()
                    return
        finally:
            for monitor in monitors:
                monitor.close()

    def stop(self) -> None:
        """End the watch and close its sockets (before the client's context ends)."""
        self._stop.set()
        self._thread.join(timeout=5)


class BoundedKernelClient(AsyncKernelClient):
    """jupyter_client's asynchronous kernel client whose sockets refuse a message over
    ``max_message_bytes`` (ZMQ ``MAXMSGSIZE``: the connection is cut before the message
    is read; ``LinkWatch`` notices). Set through the kernel manager's config."""

    max_message_bytes = Integer(-1, help="Largest message read from the kernel (bytes).").tag(
        config=True
    )

    def start_channels(self, *args: Any, **kwargs: Any) -> None:
        # Options set on a context apply to the sockets it creates next: the channels'.
        self.context.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        try:
            super().start_channels(*args, **kwargs)
        finally:
            self.context.setsockopt(zmq.MAXMSGSIZE, -1)


class PortalNotebookClient(PapermillNotebookClient):
    """papermill's client with the portal's output limits, applied to what the kernel
    sends (kept in the notebook, counted in bytes):

    - each cell keeps at most ``stream_max_bytes`` of stream output (stdout and stderr
      together); the rest is cut and counted in a marker, the cell's last output,
      "[output truncated: N bytes over the 10 MB limit of this cell]"; the run goes on;
    - the notebook keeps at most ``output_max_bytes`` of outputs (streams, display data,
      errors, widget state; what a cleared output or a display update replaced no longer
      counts). The output that would pass it is dropped, a marker says so, everything the
      kernel sends afterwards is dropped, and ``on_exceeded()`` is called once (it stops
      the kernel);
    - the kernel client (``BoundedKernelClient``, made by the kernel manager) refuses a
      message over ``output_max_bytes`` plus an envelope, so the worker never reads it;
      that also counts as exceeding the limit (``LinkWatch``).

    ``exceeded`` tells whether the limit was passed. Memory in the worker is bounded by
    the kept output plus one message. ``failures`` maps the index of a cell that failed
    to its ``CellFailure`` (for ``summarise_error``).
    """

    def __init__(
        self,
        nb_man: Any,
        *,
        stream_max_bytes: int,
        output_max_bytes: int,
        on_exceeded: Callable[[], None],
        **kwargs: Any,
    ):
        super().__init__(nb_man, **kwargs)
        self.stream_max_bytes = stream_max_bytes
        self.output_max_bytes = output_max_bytes
        self.on_exceeded = on_exceeded
        self.exceeded = False
        self.kept_bytes = 0
        self.link_watch: LinkWatch | None = None
        self._cells: dict[int, _CellOutput] = {}
        self._widget_bytes: dict[tuple, int] = {}
        self._exceeded_lock = threading.Lock()
        self._current_cell: Any = None
        self.failures: dict[int, CellFailure] = {}

    # -- the limit of the notebook

    def limit_exceeded(self) -> None:
        """Record that the output passed its limit and call ``on_exceeded`` (once; from
        any thread)."""
        with self._exceeded_lock:
            if self.exceeded:
                return
            self.exceeded = True
        self.on_exceeded()

    def _exceed(self) -> None:
        """Mark the cell being executed and call ``limit_exceeded``."""
        if self._current_cell is not None:
            limit = size_words(self.output_max_bytes)
            text = f"\n[output stopped: the run's output passed its limit of {limit}]\n"
            marker = nbformat.v4.new_output("stream", name="stderr", text=text)
            self._current_cell.setdefault("outputs", []).append(marker)
        self.limit_exceeded()

    def _fits(self, added: int) -> bool:
        return self.kept_bytes + added <= self.output_max_bytes

    def _cell(self, cell_index: int) -> _CellOutput:
        return self._cells.setdefault(cell_index, _CellOutput())

    def _cleared(self, cell_index: int) -> None:
        cell = self._cells.pop(cell_index, None)
        if cell is not None:
            self.kept_bytes -= cell.kept

    # -- nbclient's output handling

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self._current_cell = cell
        return super().process_message(msg, cell, cell_index)

    async def async_start_new_kernel_client(self) -> Any:
        """Start the kernel client (a ``BoundedKernelClient``) and watch its sockets."""
        kc = await super().async_start_new_kernel_client()
        channels = (kc.shell_channel, kc.iopub_channel, kc.stdin_channel, kc.control_channel)
        sockets = [c.socket for c in channels if getattr(c, "socket", None) is not None]
        self.link_watch = LinkWatch(kc.context, sockets, self.limit_exceeded)
        return kc

    # nbclient binds the synchronous twin to its own coroutine: bind it to ours.
    start_new_kernel_client = run_sync(async_start_new_kernel_client)

    async def async_execute_cell(
        self, cell: Any, cell_index: int, *args: Any, **kwargs: Any
    ) -> Any:
        """nbclient's, remembering why a cell failed: nbclient keeps the execute reply's
        exception only in the CellExecutionError, which papermill then drops."""
        try:
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        except CellExecutionError as exc:
            self.failures[cell_index] = CellFailure(
                ename=exc.ename or "", evalue=exc.evalue or "", stderr=_stderr_of(cell)
            )
            raise

    execute_cell = run_sync(async_execute_cell)

    def output(
        self, outs: list, msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> Any:
        if self.exceeded:
            return None
        hooked = bool(self.output_hook_stack[msg["parent_header"].get("msg_id")])
        if self.clear_before_next_output and not hooked:  # type: ignore[has-type]
            # nbclient's delayed clear, done here so that the cleared bytes stop counting.
            outs[:] = []
            self.clear_display_id_mapping(cell_index)
            self.clear_before_next_output = False
            self._cleared(cell_index)
        cell = self._cell(cell_index)
        content = msg.get("content") or {}
        cut = 0
        if msg["msg_type"] == "stream" and isinstance(content.get("text"), str):
            text = content["text"]
            size = text_bytes(text)
            room = self.stream_max_bytes - cell.stream
            if size > room:
                kept = _utf8_prefix(text, room)
                cut = size - text_bytes(kept)
                msg = {**msg, "content": {**content, "text": kept}}
                size -= cut
            if not size:
                msg = {}
        else:
            size = value_bytes(content)
        if size and not self._fits(size):
            self._exceed()
            return None
        out = super().output(outs, msg, display_id, cell_index) if msg else None
        if size and (out is not None or hooked):
            cell.kept += size
            self.kept_bytes += size
            if msg["msg_type"] == "stream":
                cell.stream += size
        if cut:
            self._mark_cut(outs, cell, cut)
        return out

    def _mark_cut(self, outs: list, cell: _CellOutput, cut: int) -> None:
        """Count ``cut`` stream bytes in the cell's marker, kept as its last output."""
        cell.dropped += cut
        limit = size_words(self.stream_max_bytes)
        text = f"\n[output truncated: {cell.dropped} bytes over the {limit} limit of this cell]\n"
        if cell.marker is None:
            cell.marker = nbformat.v4.new_output("stream", name="stderr", text=text)
        else:
            cell.marker["text"] = text
        if not (outs and outs[-1] is cell.marker):
            if any(o is cell.marker for o in outs):
                outs[:] = [o for o in outs if o is not cell.marker]
            outs.append(cell.marker)

    def clear_output(self, outs: list, msg: dict[str, Any], cell_index: int) -> None:
        super().clear_output(outs, msg, cell_index)
        if not outs:
            self._cleared(cell_index)

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        # nbclient replaces the data of every output showing ``display_id``: count the
        # change. (A private method of nbclient 0.11, the version requirements.txt pins.)
        if self.exceeded:
            return
        targets = self._display_id_map.get(display_id, {})
        new = value_bytes(msg.get("content", {}).get("data"))
        change: dict[int, int] = {}
        for cell_index, indices in targets.items():
            outputs = self.nb.cells[cell_index].get("outputs", [])
            for i in indices:
                old = value_bytes(outputs[i].get("data")) if i < len(outputs) else 0
                change[cell_index] = change.get(cell_index, 0) + new - old
        if not self._fits(sum(change.values())):
            self._exceed()
            return
        super()._update_display_id(display_id, msg)
        for cell_index, delta in change.items():
            self._cell(cell_index).kept += delta
            self.kept_bytes += delta

    def handle_comm_msg(self, outs: list, msg: dict[str, Any], cell_index: int) -> None:
        # Widget state is kept (notebook metadata) per comm and key, replaced by updates.
        if self.exceeded:
            return
        content = msg.get("content") or {}
        data = content.get("data") or {}
        comm_id = content.get("comm_id")
        sizes: dict[tuple, int] = {}
        if isinstance(data, dict) and isinstance(data.get("state"), dict):
            sizes = {(comm_id, key): value_bytes(v) for key, v in data["state"].items()}
        if isinstance(data, dict) and isinstance(data.get("buffer_paths"), list):
            for path, buffer in zip(data["buffer_paths"], msg.get("buffers") or [], strict=False):
                sizes[(comm_id, "buffer", repr(path))] = value_bytes(buffer)
        change = sum(size - self._widget_bytes.get(key, 0) for key, size in sizes.items())
        if not self._fits(change):
            self._exceed()
            return
        super().handle_comm_msg(outs, msg, cell_index)
        self._widget_bytes.update(sizes)
        self.kept_bytes += change


class _Session:
    """State of one execution, handed to the papermill engine below."""

    def __init__(
        self,
        kernel_env: dict[str, str],
        sandbox: Sandbox,
        partial_path: Path | None,
        partial_interval: float,
        progress: Progress,
        limits: OutputLimits,
    ):
        self.kernel_env = kernel_env
        self.sandbox = sandbox
        self.partial_path = partial_path
        self.partial_interval = partial_interval
        self.progress = progress
        self.limits = limits
        self.nb_man = None
        self.client: PortalNotebookClient | None = None
        self.pid = None
        self.output_exceeded = False

    def stop_for_output(self) -> None:
        """The output passed its limit: kill the sandbox now (the kernel may still be
        flooding), and let the run end FAILED. Called from the client or its link watch."""
        self.output_exceeded = True
        pid = self.kernel_pid()
        killed = self.sandbox.kill([pid] if pid else [])
        log.info("stopped the sandbox: output over %s pids=%s", self.limits.notebook, killed)

    def kernel_pid(self) -> int | None:
        """Pid of this execution's kernel once it has started (remembered after it exits)."""
        if self.pid is None:
            provisioner = getattr(getattr(self.client, "km", None), "provisioner", None)
            self.pid = getattr(provisioner, "pid", None)
        return self.pid

    def begin(self, nb_man: Any) -> None:
        self.nb_man = nb_man
        self.progress.cells_total = sum(1 for c in nb_man.nb.cells if c.cell_type == "code")

    def on_cell_start(self, cell: Any, cell_index: int, **_: Any) -> None:
        self.kernel_pid()  # remember it while the kernel manager still knows it
        self.progress.current_index = cell_index
        lines = [line for line in cell.source.splitlines() if line.strip()]
        self.progress.current_head = (lines[0] if lines else "")[:200]

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any, **_: Any) -> None:
        self.progress.cells_done += 1
        now = time.monotonic()
        if self.partial_path and now - self.progress.partial_saved_at >= self.partial_interval:
            self.save_partial()
            self.progress.partial_saved_at = now

    def save_partial(self) -> None:
        """Write the notebook as executed so far (atomically) for the live view; not
        once its output passes the render limit (the live view keeps the last one written:
        rendering more would cost the worker's memory, see ``jobs.render``)."""
        if not (self.partial_path and self.nb_man):
            return
        if self.client is not None and self.client.kept_bytes > self.limits.render:
            return
        tmp = self.partial_path.with_suffix(".tmp")
        nbformat.write(self.nb_man.nb, str(tmp))
        tmp.replace(self.partial_path)
        self.progress.partial_version += 1


class PortalEngine(NBClientEngine):
    """papermill's nbclient engine with our hooks, kernel environment and working dir.

    Registered as papermill engine "portal". Only ``portal_session`` is new; everything
    else is papermill's own argument handling (papermill/engines.py NBClientEngine).
    """

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        session: _Session = kwargs.pop("portal_session")
        kwargs = remove_args(["input_path"], **kwargs)
        safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
        final_kwargs = merge_kwargs(
            safe_kwargs,
            timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logging.getLogger("papermill"),
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            on_cell_start=session.on_cell_start,
            on_cell_executed=session.on_cell_executed,
        )
        session.begin(nb_man)
        # The kernel client (created by the manager, configured through it) refuses any
        # message that alone would pass the output limit.
        bound = session.limits.notebook + _ENVELOPE_BYTES
        km = SandboxKernelManager(
            kernel_name=kernel_name,
            sandbox=session.sandbox,
            client_class=f"{__name__}.BoundedKernelClient",
            config=Config({"BoundedKernelClient": {"max_message_bytes": bound}}),
        )
        client = session.client = PortalNotebookClient(
            nb_man,
            km=km,
            stream_max_bytes=session.limits.stream,
            output_max_bytes=session.limits.notebook,
            on_exceeded=session.stop_for_output,
            **final_kwargs,
        )
        # The kernel is not shut down gracefully (nbclient leaves a kernel manager it did not
        # create alone): ``execute`` kills the whole sandbox right after, in milliseconds.
        # env replaces the worker's environment for the kernel; the provisioner starts it
        # in the sandbox's home directory.
        try:
            return client.execute(env=session.kernel_env)
        finally:
            if client.link_watch is not None:
                client.link_watch.stop()
            if client.kc is not None:
                client.kc.stop_channels()


papermill_engines.register("portal", PortalEngine)


def execute(
    input_path: Path,
    output_path: Path,
    parameters: dict,
    *,
    spark_master: str,
    sandbox: Sandbox,
    timeout_seconds: float,
    tick: Callable[[Progress], TickAnswer] | None = None,
    on_monitor_exit: Callable[[], None] | None = None,
    tick_interval: float = 1.0,
    lease_seconds: float = 45.0,
    partial_path: Path | None = None,
    partial_interval: float = 5.0,
    kernel_extra_env: dict | None = None,
    spark_conf: dict[str, str] | None = None,
    limits: OutputLimits | None = None,
    stop_file: Path | None = None,
    stop_timeout: float = 120.0,
) -> Outcome:
    """Execute ``input_path`` into ``output_path`` and report how it ended (see module doc).

    ``sandbox`` is the run's prepared ``portal.sandbox.Sandbox``; the caller destroys it
    afterwards. ``tick(progress)`` returns a ``TickAnswer``; it runs in the monitor thread,
    every ``tick_interval`` seconds, and an exception from it counts as CONTINUE until
    ``lease_seconds`` pass without a good answer. ``on_monitor_exit()`` runs last in the
    monitor thread (the services close that thread's database connections there).
    ``timeout_seconds`` bounds the whole execution, kernel start included. ``limits``
    (default: ``OutputLimits.from_settings()``) bounds the output the worker keeps
    (``PortalNotebookClient``); a run whose output passed them ends FAILED with
    "output exceeded 100 MB", its output notebook holding what was kept. ``spark_conf``
    gives a local driver Spark settings (``kernel.kernel_env``).

    A STOP answer (a continuous run asked to stop) creates ``stop_file``, which the
    kernel's helper watches (``telemetry.streaming``, told its path by the kernel's
    ``PORTAL_STOP_FILE``); the monitor keeps ticking, and if the notebook has not ended
    ``stop_timeout`` seconds later it kills the sandbox as a cancel does (CANCELLED). A
    notebook that ends by itself after the stop was asked for SUCCEEDS with ``stopped``
    set.
    """
    kernel.ensure_kernelspec()
    progress = Progress()
    env = kernel.kernel_env(
        spark_master,
        kernel_extra_env,
        memory_bytes=sandbox.spec.limits.memory_bytes,
        spark_conf=spark_conf,
    )
    limits = limits or OutputLimits.from_settings()
    session = _Session(env, sandbox, partial_path, partial_interval, progress, limits)
    stop = threading.Event()
    verdict: dict[str, OutcomeStatus] = {}
    stopping: dict[str, float] = {}  # "stop_at": when the stop flag was raised (monotonic)

    def monitor() -> None:
        try:
            watch()
        finally:
            if on_monitor_exit is not None:
                on_monitor_exit()

    def watch() -> None:
        last_ok = time.monotonic()
        while not stop.wait(tick_interval):
            reason = None
            if progress.elapsed > timeout_seconds:
                reason = OutcomeStatus.TIMED_OUT
            elif tick is not None:
                try:
                    answer = tick(progress)
                    last_ok = time.monotonic()
                except Exception:
                    log.exception("progress tick failed")
                    expired = time.monotonic() - last_ok > lease_seconds
                    answer = TickAnswer.LOST if expired else TickAnswer.CONTINUE
                if answer == TickAnswer.STOP:
                    if "stop_at" not in stopping:
                        stopping["stop_at"] = time.monotonic()
                        _raise_stop_flag(stop_file)
                    elif time.monotonic() - stopping["stop_at"] > stop_timeout:
                        answer = TickAnswer.CANCEL  # not stopped in time: as a cancel
                reason = STOPPED_BY.get(answer)
            if reason:
                verdict["reason"] = reason
                pid = session.kernel_pid()
                killed = sandbox.kill([pid] if pid else [])
                log.info("stopped the sandbox: reason=%s pids=%s", reason, killed)
                return

    watcher = threading.Thread(target=monitor, name="run-monitor", daemon=True)
    watcher.start()
    try:
        papermill.execute_notebook(
            str(input_path),
            str(output_path),
            parameters=parameters,
            engine_name="portal",
            kernel_name=kernel.kernel_name(),
            language="python",
            progress_bar=False,
            request_save_on_cell_execute=False,
            start_timeout=120,
            portal_session=session,
        )
        outcome = Outcome(OutcomeStatus.SUCCEEDED, output_path)
    except PapermillExecutionError as exc:
        # papermill's cell index is the client's (it adds its marker cells afterwards).
        failures = session.client.failures if session.client is not None else {}
        error = summarise_error(
            {
                "cell_index": exc.cell_index,
                "ename": exc.ename,
                "evalue": str(exc.evalue),
                "traceback": _ANSI.sub("", "\n".join(exc.traceback)),
            },
            failures.get(exc.cell_index),
        )
        outcome = Outcome(
            OutcomeStatus.FAILED,
            output_path if output_path.exists() else None,
            error=error,
            message=f"{error['ename']}: {error['evalue']}",
        )
    except Exception as exc:  # the kernel died, was killed, or never started
        message = f"{type(exc).__name__}: {exc}"[:500]
        outcome = Outcome(OutcomeStatus.INFRA_ERROR, None, message=message)
        if session.nb_man is not None:
            try:
                nbformat.write(session.nb_man.nb, str(output_path))
                outcome.output_path = output_path
            except Exception:
                log.exception("could not save the partial notebook")
    finally:
        stop.set()
        watcher.join(timeout=30)
        # Whatever happened, nothing of this run outlives it.
        pid = session.kernel_pid()
        sandbox.kill([pid] if pid else [])
    reason = verdict.get("reason")
    if reason and outcome.status != OutcomeStatus.SUCCEEDED:
        message = stop_message(reason, timeout_seconds)
        outcome = Outcome(reason, outcome.output_path, outcome.error, message)
    elif session.output_exceeded:
        # Whatever the kernel did next (it was killed), the output's size ended the run.
        message = f"output exceeded {size_words(limits.notebook)}"
        error = {
            "cell_index": progress.current_index,
            "ename": "OutputLimitExceeded",
            "evalue": message,
            "traceback": "",
        }
        outcome = Outcome(OutcomeStatus.FAILED, outcome.output_path, error, message)
    elif (
        outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.INFRA_ERROR) and sandbox.oom_killed()
    ):
        limit = sandbox.spec.limits.memory_bytes or 0
        message = f"memory limit exceeded ({limit / 2**30:g} GiB)"
        error = {**outcome.error, "ename": "MemoryLimitExceeded", "evalue": message}
        error.setdefault("traceback", "")
        error.setdefault("cell_index", progress.current_index)
        message = f"MemoryLimitExceeded: {message}"
        outcome = Outcome(OutcomeStatus.FAILED, outcome.output_path, error, message)
    if "stop_at" in stopping and outcome.status == OutcomeStatus.SUCCEEDED:
        outcome.stopped = True
        outcome.message = "Stopped on request."
    outcome.progress = progress
    return outcome


def _raise_stop_flag(path: Path | None) -> None:
    """Create the stop flag ``path`` (readable by the sandbox's uid: it lives in the
    sandbox's own home); a failure is logged, and the stop timeout then cancels the run."""
    if path is None:
        log.warning("stop asked for, but the run has no stop flag: the timeout will cancel it")
        return
    try:
        path.write_text("stop\n")
        path.chmod(0o644)
        log.info("raised the stop flag %s", path)
    except OSError:
        log.exception("could not write the stop flag %s", path)
