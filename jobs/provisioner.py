"""The kernel provisioner that starts the portal kernel inside a run's sandbox.

jupyter_client's kernel provisioners are its documented extension point for *how* a kernel
is launched (jupyter_client docs, "Kernel Provisioning"); papermill and nbclient stay as
they are. The portal kernelspec names this provisioner (``jobs.kernel.PROVISIONER_NAME``,
registered as an entry point in pyproject.toml), and the executor hands the run's
``portal.sandbox.Sandbox`` to the kernel manager it creates (``SandboxKernelManager``).

The provisioner then:

- puts the connection file and the kernel's ZMQ sockets (IPC transport) in the sandbox's
  ``ipc`` directory, owned by the sandbox's uid: a sandbox without network still talks
  to its worker, and no TCP port of the kernel is reachable by anyone else;
- wraps the kernel command in the sandbox (``Sandbox.wrap``), starts it with exactly the
  environment the executor built (plus the sandbox's HOME and TMPDIR) in the sandbox's
  home directory, joined to its cgroup or under its rlimits (``Sandbox.preexec``);
- sends the kernel's stdout and stderr file descriptors (the JVM's and the Python
  workers' output, a crash) to the run's kernel log (``jobs.logs.kernel_log_path``), a
  file in the sandbox's own directory that the sandbox does not see.

A kernel manager without a sandbox is refused: the portal kernel never starts outside one.
"""

import os
from typing import Any, BinaryIO

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Any as AnyTrait

from jobs.logs import kernel_log_path
from portal.sandbox import SandboxUnavailable


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that carries the sandbox its kernel must start in."""

    sandbox = AnyTrait(
        None, allow_none=True, help="The portal.sandbox.Sandbox of this run (prepared)."
    )


class SandboxProvisioner(LocalProvisioner):
    """``LocalProvisioner`` that launches the kernel in ``parent.sandbox`` (see module doc)."""

    _kernel_log: BinaryIO | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        sandbox = getattr(self.parent, "sandbox", None)
        if sandbox is None:
            raise SandboxUnavailable(
                "The portal kernel starts only inside a run's sandbox (jobs.executor)."
            )
        km = self.parent
        assert km is not None  # set by jupyter_client before launch
        km.transport = "ipc"
        km.cache_ports = False
        km.ip = str(sandbox.ipc / "kernel")
        km.connection_file = str(sandbox.ipc / "connection.json")
        kwargs = await super().pre_launch(**kwargs)
        if sandbox.enabled:
            os.chown(km.connection_file, sandbox.spec.uid, sandbox.spec.uid)
        kwargs["cmd"] = sandbox.wrap(kwargs["cmd"])
        kwargs["env"] = sandbox.env(kwargs.get("env") or {})
        kwargs["cwd"] = str(sandbox.home)
        kwargs["preexec_fn"] = sandbox.preexec
        # Inside its pid namespace the kernel's parent is the sandbox's init, not the
        # worker: do not tell it the worker's pid to watch (bwrap --die-with-parent ends
        # the sandbox with the worker instead).
        kwargs["independent"] = sandbox.enabled
        # Opened here, by the worker, in a directory of root's that the sandbox cannot see
        # (no symlink of the user's can be there); the kernel inherits the descriptor.
        fd = os.open(
            kernel_log_path(sandbox),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        self._kernel_log = os.fdopen(fd, "ab")
        kwargs["stdout"] = kwargs["stderr"] = self._kernel_log
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        try:
            return await super().launch_kernel(cmd, **kwargs)
        finally:
            if self._kernel_log is not None:  # the kernel holds its own copy now
                self._kernel_log.close()
                self._kernel_log = None
