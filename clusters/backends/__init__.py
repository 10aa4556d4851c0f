"""Spark cluster backends: one interface, two implementations (local standalone, EMR).

A backend never touches the database: services pass it a ``Cluster`` and store what it
returns. ``get_backend(name)`` returns the configured instance.
"""

from dataclasses import dataclass, field


class BackendError(Exception):
    """The backend could not do what was asked; the message is for people."""


@dataclass
class ClusterStatus:
    """What a backend knows about a cluster right now.

    ``state`` is one of the portal's cluster states (STARTING, READY, TERMINATING,
    TERMINATED, FAILED); ``workers`` the workers registered; ``cores`` and ``memory_mb``
    the cluster's totals; ``reason`` explains FAILED or TERMINATED; ``info`` holds
    backend-specific fields to store (addresses, ids).
    """

    state: str
    workers: int = 0
    cores: int = 0
    memory_mb: int = 0
    reason: str = ""
    info: dict = field(default_factory=dict)


def get_backend(name: str):
    """The backend instance for ``name`` ("local" or "emr"); raises BackendError."""
    if name == "local":
        from clusters.backends.local import LocalBackend

        return LocalBackend()
    if name == "emr":
        from clusters.backends.emr import EmrBackend

        return EmrBackend()
    raise BackendError(f"Unknown cluster backend {name!r}.")
