"""Spark cluster backends: one interface, ``ClusterBackend``, two implementations (local
standalone clusters, ``clusters.backends.local``; AWS EMR, ``clusters.backends.emr``).

``clusters.services`` never asks which backend a cluster has: it calls the interface and
stores what comes back. A backend never writes the database: services pass it a
``Cluster`` and store the model fields it returns (its only reads are the row it is given
and, for EMR, the releases staff offer). Whatever is backend-specific, from launch limits
to what a state reported while terminating means, is decided here, in the backend.
``get_backend(name)`` returns the instance for a ``Cluster.backend`` value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from clusters.models import Cluster


class BackendError(Exception):
    """The backend could not do what was asked; the message is for people."""


@dataclass
class ClusterStatus:
    """What a backend knows about a cluster right now.

    ``state`` is one of the portal's cluster states (STARTING, READY, TERMINATING,
    TERMINATED, FAILED); ``workers`` the workers registered; ``cores`` and ``memory_mb``
    the cluster's totals (None: unknown, keep what is recorded); ``reason`` explains
    FAILED or TERMINATED; ``info`` holds backend-specific fields to store (addresses,
    ids).
    """

    state: str
    workers: int | None = 0
    cores: int | None = 0
    memory_mb: int | None = 0
    reason: str = ""
    info: dict = field(default_factory=dict)


class ClusterBackend(Protocol):
    """What every backend does. Methods raise BackendError for anything that failed on
    the backend's side; ``cluster`` is a ``clusters.models.Cluster`` row."""

    #: The ``Cluster.backend`` value it serves ("local", "emr").
    name: str
    #: How messages to people name its clusters ("Local", "EMR").
    label: str
    #: Whether a cluster needs one of its owner's SSH keys.
    requires_ssh_key: bool

    @property
    def max_per_user(self) -> int | None:
        """Live clusters a user (not staff) may have on it, those started for their runs
        included; None: no limit."""
        ...

    @property
    def max_per_host(self) -> int | None:
        """Live clusters it can run at once; None: no limit."""
        ...

    def default_release(self) -> str:
        """The release (Spark version or EMR label) of a cluster that names none."""
        ...

    def start(self, cluster: Cluster) -> dict[str, Any]:
        """Start the cluster (or find the one an interrupted start left) and return the
        ``Cluster`` fields to store (ids, addresses, process records)."""
        ...

    def describe(self, cluster: Cluster) -> ClusterStatus:
        """The cluster's state now, as the portal means it given the row's own state (e.g.
        a cluster asked to stop whose processes are gone is TERMINATED, not FAILED; one
        that was never started and is asked to stop is TERMINATED)."""
        ...

    def describe_many(self, clusters: Sequence[Cluster]) -> dict[int, ClusterStatus]:
        """``describe`` for many clusters, by primary key, in as few calls as the backend
        allows. Clusters left out have nothing new to record (their state is unknown, or
        unchanged where the backend can tell cheaply); a failure for one cluster leaves
        out that one, a failure of the whole call raises BackendError."""
        ...

    def terminate(self, cluster: Cluster) -> None:
        """End the cluster: when it returns the cluster is gone (local) or going (EMR: a
        later ``describe`` sees the end). May set on ``cluster`` an id it found (EMR
        adopting a launch whose save was lost), for the caller to store."""
        ...

    def clean_up(self, cluster: Cluster) -> None:
        """Free what a cluster that ended FAILED may still hold (local: processes and
        its sandbox; EMR: nothing, EMR ended it)."""
        ...


def get_backend(name: str) -> ClusterBackend:
    """The backend instance for ``name`` ("local" or "emr"); raises BackendError."""
    if name == "local":
        from clusters.backends.local import LocalBackend  # it imports this module

        return LocalBackend()
    if name == "emr":
        from clusters.backends.emr import EmrBackend  # it imports this module

        return EmrBackend()
    raise BackendError(f"Unknown cluster backend {name!r}.")
