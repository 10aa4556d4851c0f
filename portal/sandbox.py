"""Where user code runs: bubblewrap sandboxes, behind one launch seam.

Every process that runs user code is started through a ``Sandbox``: a run's kernel (with
its Spark driver and Python workers, through ``jobs.provisioner``) and every process of a
local cluster (``clusters.backends.local``)::

    sandbox = Sandbox(SandboxSpec(name="r42-a1", uid=uid_for(owner.pk), limits=...))
    sandbox.prepare()                          # directories, passwd, cgroup; may raise
    proc = sandbox.popen(argv, env, ...)        # or sandbox.wrap(argv) + sandbox.preexec
    ...
    sandbox.destroy()                          # every process in it killed, all removed

What a sandbox is (``KERNEL_SANDBOX=bwrap``, the default):

- **Unprivileged on the host.** bwrap runs as root *without* a user namespace (root
  mapped into a user namespace is still root on the host), then ``setpriv`` drops to the
  sandbox's uid and gid, with no supplementary groups, ``no_new_privs`` and an empty
  capability bounding set. Each portal user has a uid of their own
  (``SANDBOX_UID_BASE`` + user id), so users' files and process limits are apart.
- **Namespaces.** Its own pid, IPC and UTS namespaces: no ``/proc`` of the worker or of
  other sandboxes. Its own network namespace with only a loopback interface, unless the
  spec asks for the host network (local clusters, whose workers other hosts must reach).
- **Filesystem,** built bind by bind on an empty root: read-only the system (``/usr``,
  ``/etc`` with a passwd and group of the sandbox's own), the interpreter, the virtual
  environment, the ``telemetry`` package and ``spec.read_only``; writable only its own
  ``home`` (working directory and ``HOME``), ``tmp`` (mounted on ``/tmp``: on disk, not
  in memory), ``ipc`` (kernel sockets) and ``spec.writable``. Nothing else: never the
  repository root nor ``PORTAL_DATA_DIR`` (secret key, database, storage, other runs).
- **Environment.** bwrap itself is started with the environment the caller built (an
  allow-list): the sandbox's first process keeps the environment bwrap was started with.
- **Limits.** A cgroup of its own (v1 ``memory``, ``pids``, ``cpu`` and ``freezer``
  controllers, or v2) when the host lets us make one; otherwise rlimits
  (``RLIMIT_NPROC``, and ``RLIMIT_DATA`` at twice the memory limit as a coarse bound:
  never ``RLIMIT_AS``, which breaks the JVM's address-space reservations).

With ``KERNEL_SANDBOX=none`` (an operator's explicit choice, shown to staff on every page)
the same commands run without bwrap, as the worker's own user, in the same directories.

Checked on Debian 12 with bubblewrap 0.8: a sandbox made this way cannot read a root-only
0600 file or ``/etc/shadow``, cannot see the worker's processes, and cannot connect to
127.0.0.1 services of the host (tests/portal/test_sandbox.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR

import psutil
from django.conf import settings

from portal.procs import is_alive

log = logging.getLogger(__name__)

#: Top-level directories that are symlinks into /usr on merged-/usr systems, or else
#: bound read-only.
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class SandboxUnavailable(RuntimeError):
    """A sandbox cannot be made on this host; the message tells an operator why and what
    to do. Notebooks do not run then (fail closed)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox. ``memory_bytes``: bytes of memory (RAM, and swap
    where the host accounts it); ``pids``: processes and threads; ``cpus``: CPU time as a
    number of cores (1.5 = one and a half cores). None means no limit."""

    memory_bytes: int | None = None
    pids: int | None = None
    cpus: float | None = None

    @classmethod
    def for_runs(cls) -> Limits:
        """The limits of a notebook run, from the settings (KERNEL_MEMORY_LIMIT,
        KERNEL_PIDS_LIMIT, KERNEL_CPU_LIMIT)."""
        return cls(
            settings.KERNEL_MEMORY_LIMIT, settings.KERNEL_PIDS_LIMIT, settings.KERNEL_CPU_LIMIT
        )


@dataclass(frozen=True)
class SandboxSpec:
    """What a sandbox may see and use.

    ``name`` names its directory under SANDBOX_ROOT and its cgroup (lower-case letters,
    digits and dashes; unique among live sandboxes). ``uid`` is the host uid its processes
    run as (``uid_for``). ``read_only`` and ``writable`` are extra host paths bound at the
    same path inside (missing ones are skipped); ``writable`` ones are given to ``uid``.
    ``shared_writable`` paths are bound read-write too but stay root's (``root_dir``): the
    sandbox writes only the directories inside them that its uid owns, and can neither
    rename, replace nor plant symlinks among them (a local cluster and its owner's streams
    root, whose checkpoint directories the portal's root worker later opens).
    ``network`` False gives it a network namespace with loopback only; True keeps the
    host's network. ``forward_port``, for a
    sandbox without network, is a port on its loopback relayed to the one endpoint given
    to ``Sandbox.relay`` (through a unix socket in its ``ipc`` directory). ``publish_port``,
    for a sandbox without network, is a port on its loopback published the other way: the
    sandbox's own socat accepts on the unix socket ``Sandbox.publish_socket`` in its
    ``ipc`` directory and connects to that port inside (a run's Spark UI). ``die_with_parent``
    kills the sandbox when the process that launched it dies (kernels; not the detached
    processes of a local cluster).
    """

    name: str
    uid: int
    read_only: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    shared_writable: tuple[str, ...] = ()
    network: bool = False
    forward_port: int | None = None
    publish_port: int | None = None
    die_with_parent: bool = True
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"bad sandbox name {self.name!r}")
        if self.uid <= 0:
            raise ValueError("a sandbox never runs as root")


def uid_for(user_id: int) -> int:
    """The host uid (and gid) of a portal user's sandboxes: SANDBOX_UID_BASE + user id.

    Raises ValueError when the result would leave the 32-bit uid range that Linux
    accepts (below 2**31 - 1, nobody's 65534 excluded)."""
    uid = settings.SANDBOX_UID_BASE + int(user_id)
    if not 0 < uid < 2**31 - 1 or uid == 65534:
        raise ValueError(
            f"user {user_id} maps to uid {uid}, outside the usable range: lower SANDBOX_UID_BASE"
        )
    return uid


def views_root(owner_id: int) -> str:
    """The batch-views root of one user: ``TELEMETRY_VIEWS_ROOT/<user id>``, a local
    directory that only that user's sandboxes (runs and clusters) may write, or a URI."""
    root = settings.TELEMETRY_VIEWS_ROOT
    if "://" in root:
        return f"{root.rstrip('/')}/{owner_id}"
    return str(Path(root) / str(owner_id))


def streams_root(owner_id: int) -> Path:
    """The continuous jobs' directory of one user: ``STREAMS_ROOT/<user id>``, holding each
    of their jobs' checkpoints and sinks (``Job.stream_dir``). A run's sandbox writes only
    its own job's; that user's local clusters, whose Spark drivers and executors write
    them too when a job runs there, write all of it."""
    return Path(settings.STREAMS_ROOT) / str(owner_id)


#: Opens a directory without following a symlink in its last component.
DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def root_dir(path: Path, mode: int = 0o755) -> None:
    """Make ``path`` a real directory of root's (when this process is root) with ``mode``:
    the parent of directories a sandbox's uid owns, which that uid then can neither rename,
    replace nor fill with symlinks. Created if missing; anything else in its place (a
    symlink planted while the uid owned the parent) is unlinked and a directory made
    instead. Never follows a symlink in its last component; its parent must be root's.
    Raises OSError (e.g. a non-empty directory of someone else's is not root's to take:
    it is taken, ownership only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parent = os.open(path.parent, DIR_NOFOLLOW)
    try:
        try:
            if not S_ISDIR(os.lstat(path.name, dir_fd=parent).st_mode):
                os.unlink(path.name, dir_fd=parent)
                log.warning("replaced %s, which was not a directory", path)
                raise FileNotFoundError(path)
        except FileNotFoundError:
            os.mkdir(path.name, mode, dir_fd=parent)
        fd = os.open(path.name, DIR_NOFOLLOW, dir_fd=parent)
        try:
            if os.geteuid() == 0:
                os.fchown(fd, 0, 0)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    finally:
        os.close(parent)


def enabled() -> bool:
    """True unless the operator switched the sandbox off (KERNEL_SANDBOX=none)."""
    return settings.KERNEL_SANDBOX != "none"


# --- Availability -------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probe: tuple[float, str | None] | None = None
#: A failed probe is repeated after this many seconds (an operator may have fixed it).
_PROBE_RETRY = 60.0


def unavailable_reason() -> str | None:
    """Why no sandbox can be made on this host, or None when one can (or the sandbox is
    switched off). Runs a real, tiny sandbox once per process; a failure is re-checked
    after a minute."""
    global _probe
    if not enabled():
        return None
    with _probe_lock:
        if _probe is not None and (
            _probe[1] is None or time.monotonic() - _probe[0] < _PROBE_RETRY
        ):
            return _probe[1]
        reason = _run_probe()
        _probe = (time.monotonic(), reason)
        if reason:
            log.error("no sandbox can be made: %s", reason)
        return reason


def _run_probe() -> str | None:
    missing = [tool for tool in ("bwrap", "setpriv") if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not found: "
            "install the Debian packages bubblewrap and util-linux "
            "(bin/setup does), or set KERNEL_SANDBOX=none to run notebooks unsandboxed."
        )
    if os.geteuid() != 0:
        return (
            f"the worker runs as uid {os.geteuid()}, "
            "but sandboxes need root to drop each run to its own uid "
            '(run the worker as root with CAP_SYS_ADMIN; see README "Security model").'
        )
    argv = [
        "bwrap",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-net",
        "--unshare-uts",
        "--die-with-parent",
        *_system_binds(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--no-new-privs",
        "--",
        "true",
    ]
    try:
        done = subprocess.run(
            argv, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not be started: {exc}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [
            f"exit status {done.returncode}"
        ]
        return (
            f"bwrap cannot create namespaces here ({detail[0]}); "
            "the worker needs root with CAP_SYS_ADMIN and "
            'mount, pid and network namespaces (see README "Security model").'
        )
    return None


#: How the reason of a run that failed for want of a sandbox begins (the operations page
#: counts them).
FAILURE_PREFIX = "No sandbox can be made on this host"


def require() -> None:
    """Raise SandboxUnavailable unless sandboxes can be made (or are switched off)."""
    reason = unavailable_reason()
    if reason:
        raise SandboxUnavailable(f"{FAILURE_PREFIX}, so no notebook runs: {reason}")


# --- Cgroups --------------------------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class Cgroup:
    """The cgroup of one sandbox, on cgroup v1 (one directory per controller: memory,
    pids, cpu, freezer, and cpuacct where the host mounts it apart and lets us write
    there) or v2 (one directory). ``locate`` finds where this host lets us create one;
    ``create`` makes it with the limits, ``join_self`` (called in the child between fork
    and exec) moves a process in, ``kill`` ends every process in it, ``cpu_seconds``
    reads the CPU time its processes used.

    Source of the interfaces: the kernel's Documentation/admin-guide/cgroup-v1/
    (memory.rst, pids.rst, freezer-subsystem.rst, cpuacct.rst) and cgroup-v2.rst.
    """

    V1 = ("memory", "pids", "cpu", "cpuacct", "freezer")
    BASE = Path("/sys/fs/cgroup")

    def __init__(self, version: int, dirs: dict[str, Path]):
        self.version = version
        self.dirs = dirs  # controller (v1) or "unified" (v2) -> directory

    @classmethod
    def locate(cls, name: str) -> Cgroup | None:
        """Where the cgroup of sandbox ``name`` lives, or None when cgroups cannot be used
        (SANDBOX_CGROUPS off, not root, or no writable hierarchy with a memory controller)."""
        if not settings.SANDBOX_CGROUPS or os.geteuid() != 0:
            return None
        parent = "portal-" + hashlib.sha256(str(settings.SANDBOX_ROOT).encode()).hexdigest()[:8]
        if (cls.BASE / "memory" / "memory.limit_in_bytes").exists():
            dirs = {c: cls.BASE / c / parent / name for c in cls.V1 if (cls.BASE / c).is_dir()}
            if "cpuacct" in dirs and not os.access(cls.BASE / "cpuacct", os.W_OK):
                del dirs["cpuacct"]  # CPU accounting is a nicety: never a reason to go without
            if {"memory", "pids"} <= dirs.keys() and all(
                os.access(d.parent.parent, os.W_OK) for d in dirs.values()
            ):
                return cls(1, dirs)
            return None
        if (cls.BASE / "cgroup.controllers").exists() and os.access(cls.BASE, os.W_OK):
            return cls(2, {"unified": cls.BASE / parent / name})
        return None

    def create(self, limits: Limits) -> None:
        """Make the cgroup and set ``limits``. Raises OSError when the host refuses."""
        if self.version == 1:
            for path in self.dirs.values():
                path.mkdir(parents=True, exist_ok=True)
            mem = self.dirs["memory"]
            if limits.memory_bytes:
                _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
                if (mem / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
                    _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            if limits.pids:
                _write(self.dirs["pids"] / "pids.max", str(limits.pids))
            if limits.cpus and "cpu" in self.dirs:
                _write(self.dirs["cpu"] / "cpu.cfs_period_us", "100000")
                _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(int(limits.cpus * 100000)))
            return
        path = self.dirs["unified"]
        _write(self.BASE / "cgroup.subtree_control", "+memory +pids +cpu")
        path.parent.mkdir(exist_ok=True)
        _write(path.parent / "cgroup.subtree_control", "+memory +pids +cpu")
        path.mkdir(exist_ok=True)
        if limits.memory_bytes:
            _write(path / "memory.max", str(limits.memory_bytes))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
        if limits.pids:
            _write(path / "pids.max", str(limits.pids))
        if limits.cpus:
            _write(path / "cpu.max", f"{int(limits.cpus * 100000)} 100000")

    def exists(self) -> bool:
        return any(path.is_dir() for path in self.dirs.values())

    def join_self(self) -> None:
        """Move the calling process into the cgroup (safe between fork and exec: only
        os-level calls)."""
        pid = str(os.getpid())
        for path in self.dirs.values():
            _write(path / "cgroup.procs", pid)

    def pids(self) -> list[int]:
        """Processes in the cgroup now (empty when it does not exist)."""
        path = self.dirs.get("memory") or self.dirs.get("unified")
        if path is None:
            return []
        try:
            return [int(line) for line in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this cgroup for exceeding
        its memory limit (v1 ``memory.oom_control``, v2 ``memory.events``)."""
        path = self.dirs.get("memory") or self.dirs.get("unified")
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        if path is None:
            return 0
        try:
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) that the cgroup's processes used since it was made, in
        seconds: v2 ``cpu.stat`` ``usage_usec``, v1 ``cpuacct.usage`` (nanoseconds; in the
        cpuacct directory, or in the cpu one where the two are mounted together). None when
        the host does not account it or the cgroup is gone: read it before ``remove``."""
        if self.version == 2:
            try:
                for line in (self.dirs["unified"] / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
            except (OSError, ValueError):
                pass
            return None
        for controller in ("cpuacct", "cpu"):
            path = self.dirs.get(controller)
            if path is None:
                continue
            try:
                return int((path / "cpuacct.usage").read_text()) / 1e9
            except (OSError, ValueError):
                continue
        return None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the cgroup, a fork bomb included: v2's ``cgroup.kill``,
        or on v1 freeze the group, signal everyone, thaw, and repeat until it is empty."""
        if self.version == 2 and (self.dirs["unified"] / "cgroup.kill").exists():
            try:
                _write(self.dirs["unified"] / "cgroup.kill", "1")
            except OSError:
                pass
        freezer = self.dirs.get("freezer")
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            frozen = (
                freezer is not None and freezer.is_dir() and self._set_freezer(freezer, "FROZEN")
            )
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if frozen and freezer is not None:
                self._set_freezer(freezer, "THAWED")
            time.sleep(0.02)

    @staticmethod
    def _set_freezer(path: Path, state: str) -> bool:
        try:
            _write(path / "freezer.state", state)
            for _ in range(100):
                if (path / "freezer.state").read_text().strip() == state:
                    return True
                time.sleep(0.005)
        except OSError:
            pass
        return False

    def siblings(self) -> list[str]:
        """Names of the other sandboxes' cgroups beside this one (same parent)."""
        parent = next(iter(self.dirs.values())).parent
        try:
            return [
                p.name
                for p in parent.iterdir()
                if p.is_dir() and p.name != next(iter(self.dirs.values())).name
            ]
        except OSError:
            return []

    def sibling(self, name: str) -> Cgroup:
        """The cgroup of sandbox ``name`` beside this one."""
        return Cgroup(self.version, {key: path.parent / name for key, path in self.dirs.items()})

    def remove(self) -> None:
        """Remove the (empty) cgroup directories; retries briefly while exiting processes
        leave."""
        for path in self.dirs.values():
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


# --- Sandboxes ------------------------------------------------------------------------------


def _system_binds() -> list[str]:
    """bwrap arguments for the read-only system: /usr, /etc, and the top-level
    directories that are symlinks into /usr (merged /usr) or directories of their own."""
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for path in _SYSTEM_LINKS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _code_paths() -> list[str]:
    """Host paths every sandbox reads: the interpreter, the virtual environment, Java and
    the project's ``telemetry`` package (never the repository root, which holds var/)."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        paths.add(os.path.realpath(java_home))
    paths.add(str(Path(settings.BASE_DIR) / "telemetry"))
    return sorted(p for p in paths if os.path.isdir(p) and not p.startswith(("/usr/", "/etc/")))


class Sandbox:
    """One sandbox on this host: its directories, its cgroup and how to start processes
    in it (see the module docstring). Cheap to construct; ``prepare`` makes it, ``destroy``
    ends it. A sandbox can be reconstructed from its spec in another process (a local
    cluster is stopped by another Celery process than the one that started it)."""

    def __init__(self, spec: SandboxSpec):
        self.spec = spec
        self.enabled = enabled()
        self.dir = Path(settings.SANDBOX_ROOT) / spec.name
        self.home = self.dir / "home"
        self.tmp = self.dir / "tmp"
        self.ipc = self.dir / "ipc"
        self.cgroup = Cgroup.locate(spec.name) if self.enabled else None
        self._cgroup_ready = False
        self._relay: subprocess.Popen | None = None
        #: CPU seconds its processes used, read by ``destroy`` from the cgroup just before
        #: it is removed; None without a cgroup, or on a host that does not account CPU.
        self.cpu_seconds: float | None = None

    # -- lifecycle

    def prepare(self) -> Sandbox:
        """Create the sandbox's directories (owned by its uid, 0700) and its cgroup.

        Raises SandboxUnavailable when sandboxes cannot be made on this host. A cgroup the
        host refuses is logged and replaced by rlimits."""
        if self.enabled:
            require()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir.parent, 0o711)
        os.chmod(self.dir, 0o711)
        for path in (self.home, self.tmp, self.ipc):
            path.mkdir(exist_ok=True)
            if self.enabled:
                os.chown(path, self.spec.uid, self.spec.uid)
            os.chmod(path, 0o700)
        if self.enabled:
            self._write_identity()
            for writable in self.spec.writable:
                if not _is_uri(writable):
                    self._own_dir(Path(writable))
            for shared in self.spec.shared_writable:
                root_dir(Path(shared))
        if self.cgroup is not None:
            self._sweep_stale_cgroups()
            try:
                self.cgroup.create(self.spec.limits)
                self._cgroup_ready = True
            except OSError as exc:
                log.warning("sandbox=%s: no cgroup (%s); using rlimits", self.spec.name, exc)
                self.cgroup.remove()
                self.cgroup = None
        return self

    def _sweep_stale_cgroups(self) -> None:
        """Remove the cgroups of sandboxes whose directory is gone: left by a worker that was
        killed, or by a removal that ran while the kernel had not yet reaped a dead process.
        (A sandbox's directory is made before its cgroup and removed after it, so a live or
        starting sandbox always has its directory.)"""
        root = Path(settings.SANDBOX_ROOT)
        cgroup = self.cgroup
        assert cgroup is not None  # prepare() calls this only with a cgroup
        for name in cgroup.siblings():
            if not (root / name).exists():
                stale = cgroup.sibling(name)
                stale.kill(timeout=2)
                stale.remove()

    def _own_dir(self, path: Path) -> None:
        """Create a writable directory of this sandbox's uid (e.g. the owner's views),
        never through a symlink in its place: the ownership and mode are set through a
        descriptor opened with O_NOFOLLOW (OSError ELOOP for a symlink), so a link planted
        by user code cannot give it a host directory such as /etc. Its parents must be
        root's (``root_dir``)."""
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, DIR_NOFOLLOW)
        try:
            os.fchown(fd, self.spec.uid, self.spec.uid)
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

    def _write_identity(self) -> None:
        uid = self.spec.uid
        (self.dir / "passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            f"sandbox:x:{uid}:{uid}:Portal sandbox:{self.home}:/bin/sh\n"
        )
        (self.dir / "group").write_text(f"root:x:0:\nnogroup:x:65534:\nsandbox:x:{uid}:\n")
        for name in ("passwd", "group"):
            os.chmod(self.dir / name, 0o644)

    def destroy(self, pids: list[int] | tuple[int, ...] = ()) -> None:
        """End every process of the sandbox (its cgroup, and the process trees of
        ``pids``, e.g. the bwrap processes that started it), record the CPU time they used
        (``cpu_seconds``), remove its cgroup and directories. Idempotent."""
        if self._relay is not None:
            self._relay.kill()
            self._relay.wait(timeout=10)
            self._relay = None
        self.kill(pids)
        if self.cgroup is not None:
            used = self.cgroup.cpu_seconds()  # everything is dead: the figure is final
            if used is not None:
                self.cpu_seconds = used
            self.cgroup.remove()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self, pids: list[int] | tuple[int, ...] = ()) -> list[int]:
        """SIGKILL everything in the sandbox: the cgroup's processes, and every process
        below ``pids`` (killing a pid namespace's first process ends the namespace).
        Returns the pids signalled outside the cgroup."""
        procs = []
        for pid in pids:
            try:
                parent = psutil.Process(pid)
                procs += parent.children(recursive=True) + [parent]
            except psutil.NoSuchProcess:
                continue
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        if self.cgroup is not None:
            self.cgroup.kill()
        # Dead is enough: a killed process that is not our child stays a zombie until its
        # new parent reaps it, which waiting for it to vanish would wait on.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(is_alive(p) for p in procs):
            time.sleep(0.01)
        return [p.pid for p in procs]

    def oom_killed(self) -> bool:
        """True when the kernel killed a process of this sandbox for passing its memory
        limit (cgroups only)."""
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def processes(self) -> list[int]:
        """Pids in the sandbox's cgroup (empty without cgroups)."""
        return self.cgroup.pids() if self.cgroup is not None else []

    # -- launching

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` plus the sandbox's own HOME, TMPDIR and Spark local dirs."""
        tmp = "/tmp" if self.enabled else str(self.tmp)
        env = dict(base, HOME=str(self.home), TMPDIR=tmp, SPARK_LOCAL_DIRS=tmp)
        if self.enabled:
            env.update(USER="sandbox", LOGNAME="sandbox")
        return env

    @property
    def forward_socket(self) -> Path:
        """The unix socket that the sandbox's forwarder connects to (see ``relay``)."""
        return self.ipc / "forward.sock"

    @property
    def publish_socket(self) -> Path:
        """The unix socket on which the sandbox publishes ``spec.publish_port`` (0600, of
        the sandbox's uid, in its 0700 ``ipc`` directory: only root reaches it outside)."""
        return self.ipc / "publish.sock"

    def relay(self, host: str, port: int) -> None:
        """Relay the sandbox's ``forward_port`` to ``host:port``, and nowhere else.

        Outside, a socat process of the worker listens on ``forward_socket`` (0600, owned
        by the sandbox's uid) and connects each client to ``host:port``; inside, the
        sandbox's own socat listens on 127.0.0.1:``forward_port`` and connects to that
        socket. Raises SandboxUnavailable when socat is missing, OSError when it cannot
        start. Stopped by ``destroy``."""
        if not self.enabled or not self.spec.forward_port:
            return
        if shutil.which("socat") is None:
            raise SandboxUnavailable(
                "socat is not installed (Debian package socat; bin/setup installs it)."
            )
        uid = self.spec.uid
        listen = (
            f"UNIX-LISTEN:{self.forward_socket},fork,unlink-early,mode=600,user={uid},group={uid}"
        )
        self._relay = subprocess.Popen(
            ["socat", listen, f"TCP:{host}:{port}"],
            env={"PATH": os.defpath},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        deadline = time.monotonic() + 5
        while not self.forward_socket.exists():
            if self._relay.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"the relay to {host}:{port} did not start")
            time.sleep(0.01)

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` in this sandbox (``argv`` itself when the
        sandbox is switched off)."""
        if not self.enabled:
            return list(argv)
        spec = self.spec
        # The forwarders live and die with the sandbox; the command is exec'd in their place.
        forwarders = []
        if spec.forward_port:
            forwarders.append(
                f"socat TCP-LISTEN:{int(spec.forward_port)},bind=127.0.0.1,fork,reuseaddr "
                f"UNIX-CONNECT:{self.forward_socket} &"
            )
        if spec.publish_port and not spec.network:
            forwarders.append(
                f"socat UNIX-LISTEN:{self.publish_socket},fork,unlink-early,mode=600 "
                f"TCP:127.0.0.1:{int(spec.publish_port)} &"
            )
        if forwarders:
            argv = ["sh", "-c", " ".join([*forwarders, 'exec "$@"']), "sandbox", *argv]
        args = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session"]
        if not spec.network:
            args.append("--unshare-net")
        if spec.die_with_parent:
            args.append("--die-with-parent")
        args += _system_binds()
        args += [
            "--ro-bind",
            str(self.dir / "passwd"),
            "/etc/passwd",
            "--ro-bind",
            str(self.dir / "group"),
            "/etc/group",
        ]
        # POSIX semaphores and shared memory (multiprocessing, joblib) live in /dev/shm: a
        # small tmpfs of the sandbox's own (its pages count against its memory limit).
        args += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--perms",
            "1777",
            "--size",
            str(256 * 2**20),
            "--tmpfs",
            "/dev/shm",
        ]
        # /tmp before everything else, so that code or data living under the host's /tmp
        # (a checkout there) is bound on top of it rather than hidden by it.
        args += ["--bind", str(self.tmp), "/tmp"]
        binds: list[tuple[str, str, str]] = [("--ro-bind", p, p) for p in _code_paths()]
        binds += [
            ("--ro-bind", p, p) for p in spec.read_only if not _is_uri(p) and os.path.exists(p)
        ]
        binds += [
            ("--bind", str(self.home), str(self.home)),
            ("--bind", str(self.ipc), str(self.ipc)),
        ]
        binds += [
            ("--bind", p, p)
            for p in (*spec.writable, *spec.shared_writable)
            if not _is_uri(p) and os.path.exists(p)
        ]
        made = {"/", "/usr", "/etc", "/proc", "/dev", "/tmp", *_SYSTEM_LINKS}
        for kind, source, target in binds:
            # bwrap (as root) creates missing parents 0700, which the sandbox's uid could
            # not traverse: create them ourselves, traverse-only.
            for parent in reversed(Path(target).parents):
                if str(parent) not in made:
                    args += ["--perms", "0711", "--dir", str(parent)]
                    made.add(str(parent))
            args += [kind, source, target]
            made.add(target)
        args += ["--chdir", str(self.home)]
        uid = str(spec.uid)
        args += [
            "setpriv",
            "--reuid",
            uid,
            "--regid",
            uid,
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
        ]
        return args + list(argv)

    def preexec(self) -> None:
        """Run in the child between fork and exec (``Popen(preexec_fn=...)``): join the
        cgroup, or set rlimits when there is none. Only os-level calls: no locks."""
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self._cgroup_ready and self.cgroup is not None:
            self.cgroup.join_self()
            return
        limits = self.spec.limits
        if self.enabled and limits.pids:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))
        if self.enabled and limits.memory_bytes:
            coarse = 2 * limits.memory_bytes
            resource.setrlimit(resource.RLIMIT_DATA, (coarse, coarse))

    def popen(self, argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` in the sandbox with exactly ``env`` (plus the sandbox's HOME and
        TMPDIR) in its home directory; other keyword arguments go to ``subprocess.Popen``.
        Raises OSError if it cannot be started."""
        return subprocess.Popen(
            self.wrap(argv),
            env=self.env(env),
            cwd=str(self.home),
            preexec_fn=self.preexec,
            close_fds=True,
            **kwargs,
        )


def _is_uri(path: str) -> bool:
    return "://" in str(path)
