"""Run notebooks through the portal's executor in a sandbox of their own, as a worker does,
for tests that call ``jobs.executor.execute`` directly.

A sandbox sees nothing of the host but what it is given: data a test generates must live
in a directory the sandbox is told to read (``shared_dir``; not under /tmp, which every
sandbox replaces with its own).
"""

import uuid
from pathlib import Path

from django.conf import settings

from jobs import executor
from portal.sandbox import Limits, Sandbox, SandboxSpec, uid_for

#: The portal user id whose uid test sandboxes run as (no such user needs to exist).
TEST_OWNER_ID = 4343


def shared_dir(name: str) -> Path:
    """A new directory under the test data directory, readable by sandboxes."""
    path = Path(settings.DATA_DIR) / "shared" / f"{name}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    for level in (path.parent, path):
        level.chmod(0o755)
    return path


def execute(
    notebook: Path,
    output: Path,
    parameters: dict,
    *,
    read_only=(),
    writable=(),
    env=None,
    timeout: float = 600,
    spark_master: str = "local[2]",
) -> executor.Outcome:
    """Execute ``notebook`` into ``output`` in a fresh sandbox that reads ``read_only`` and
    writes ``writable`` (host paths), with ``env`` added to the kernel's environment."""
    spec = SandboxSpec(
        name=f"t{uuid.uuid4().hex[:12]}",
        uid=uid_for(TEST_OWNER_ID),
        read_only=tuple(map(str, read_only)),
        writable=tuple(map(str, writable)),
        limits=Limits.for_runs(),
    )
    box = Sandbox(spec).prepare()
    try:
        return executor.execute(
            notebook,
            output,
            parameters,
            spark_master=spark_master,
            sandbox=box,
            timeout_seconds=timeout,
            kernel_extra_env=env,
        )
    finally:
        box.destroy()
