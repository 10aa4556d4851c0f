"""The logs EMR writes for a cluster, read from S3 and shown through the portal.

EMR copies a cluster's logs to ``<EMR_LOG_URI><job flow id>/`` (``log_location``), gzip'ed,
a few minutes after they are written on the nodes:

- ``steps/<step id>/{controller,stderr,stdout,syslog}.gz``: each step's (a run's notebook
  is its cluster's one step: ``jobs.logs.StepLogCollector`` stores these with the run);
- ``containers/application_<..>/container_<..>/{stderr,stdout}.gz``: YARN containers,
  i.e. the Spark drivers (cluster mode) and executors;
- ``node/<instance id>/{applications,daemons,bootstrap-actions,...}/...``: each node's.

The cluster page lists them (``list_logs``: at most MAX_LISTED keys) and shows one
object's text (``read_tail``: gunzipped, its last ``jobs.logs.MAX_BYTES``, masked with
``jobs.logs.Masker``), as text/plain.

Who may read them (``cluster_for_owner``): the cluster's owner only. Others, staff
included, get 404, as for a local cluster's Spark UI (``clusters.ui_proxy``): the logs carry
what the cluster's user wrote (their code's output, application names, SQL), and staff who
need them read the bucket with their own AWS access, not through the portal's.

Keys: the URL carries a path relative to the cluster's prefix; ``key_for`` admits only
plain segments of a known alphabet (no ``..``, no empty segment, no backslash or ``%``),
so the key is always strictly under ``<prefix><job flow id>/``: never another cluster's
logs, nor anything else in the bucket.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_safe

from clusters.models import Cluster
from jobs import logs
from jobs.emr_runner import s3_client

#: Keys listed at most per cluster (a long-lived cluster's containers can be thousands).
MAX_LISTED = 1000
#: Compressed bytes read at most from one ``.gz`` object (it is read from its start).
MAX_GZ_READ = 64 * 2**20
#: Decompressed bytes read at most from one ``.gz`` object (a gzip bomb ends here).
MAX_GUNZIPPED = 512 * 2**20
#: The CSP of a shown log: no script, no style, no origin of the portal's.
LOG_POLICY = "sandbox; default-src 'none'"
#: The groups of the listing, in order: (name, first path segment).
GROUPS = (("Steps", "steps"), ("Containers (Spark drivers and executors)", "containers"))
NODES = "Nodes"
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,:=+@-]{0,254}$")
_MAX_PATH = 1024


class PathRefused(ValueError):
    """A path that is not plainly under a cluster's log prefix."""


@dataclass(frozen=True)
class LogLocation:
    """Where EMR writes one cluster's logs: ``s3://<bucket>/<prefix>`` (``prefix`` ends
    with ``<job flow id>/``)."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def log_location(jobflow_id: str) -> LogLocation:
    """The log location of job flow ``jobflow_id`` under EMR_LOG_URI (the ``LogUri`` the
    backend launches with). Raises ValueError for an empty id or an EMR_LOG_URI that is
    not ``s3://bucket/[prefix]``."""
    if not jobflow_id or "/" in jobflow_id:
        raise ValueError(f"not a job flow id: {jobflow_id!r}")
    uri = urlsplit(settings.EMR_LOG_URI)
    if uri.scheme not in ("s3", "s3n") or not uri.netloc:
        raise ValueError(f"EMR_LOG_URI is not an S3 URI: {settings.EMR_LOG_URI!r}")
    base = uri.path.lstrip("/")
    if base and not base.endswith("/"):
        base += "/"  # EMR treats a LogUri without its final slash as a folder too
    return LogLocation(uri.netloc, f"{base}{jobflow_id}/")


def key_for(location: LogLocation, path: str) -> str:
    """The S3 key of ``path`` (relative to ``location.prefix``, as in the log URLs).

    Raises PathRefused unless every segment is plain (letters, digits and ``_.,:=+@-``,
    not starting with a dot: no ``..``, no empty segment, no backslash, ``%`` or control
    character) and the whole is at most 1024 characters: the key is then strictly under
    the prefix."""
    segments = path.split("/")
    if len(path) > _MAX_PATH or not all(_SEGMENT.match(s) for s in segments):
        raise PathRefused(path)
    return location.prefix + path


@dataclass(frozen=True)
class LogObject:
    """One log object: ``path`` relative to the cluster's prefix, ``bytes`` as stored
    (compressed for ``.gz``), ``modified`` (aware, UTC), and whether the portal shows it
    (``viewable``: ``key_for`` admits its path)."""

    path: str
    bytes: int
    modified: datetime
    viewable: bool


@dataclass
class Listing:
    """A cluster's log objects by group (``GROUPS``, then NODES, then "Other"), and
    whether the listing stopped at MAX_LISTED keys (``cut``)."""

    location: LogLocation
    groups: dict[str, list[LogObject]] = field(default_factory=dict)
    cut: bool = False

    @property
    def count(self) -> int:
        return sum(len(objects) for objects in self.groups.values())


def group_of(path: str) -> str:
    """The listing group of a relative ``path``."""
    first = path.split("/", 1)[0]
    for name, segment in GROUPS:
        if first == segment:
            return name
    return NODES if first == "node" else "Other"


def list_logs(s3: Any, location: LogLocation, limit: int = MAX_LISTED) -> Listing:
    """The log objects under ``location`` (at most ``limit``, in key order; ``cut`` when
    there were more). Raises botocore's ClientError or BotoCoreError."""
    order = [name for name, _ in GROUPS] + [NODES, "Other"]
    listing = Listing(location, {name: [] for name in order})
    found = 0
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket,
        Prefix=location.prefix,
        PaginationConfig={"PageSize": min(limit, 1000)},
    )
    for page in pages:
        for entry in page.get("Contents", []):
            if found == limit:
                listing.cut = True
                break
            path = entry["Key"][len(location.prefix) :]
            if not path or path.endswith("/"):
                continue  # a "folder" placeholder
            try:
                key_for(location, path)
                viewable = True
            except PathRefused:
                viewable = False
            obj = LogObject(path, entry["Size"], entry["LastModified"], viewable)
            listing.groups[group_of(path)].append(obj)
            found += 1
        if listing.cut:
            break
    listing.groups = {name: objects for name, objects in listing.groups.items() if objects}
    return listing


def _tail(chunks: Iterable[bytes], max_bytes: int) -> tuple[bytes, int]:
    """The last ``max_bytes`` of the concatenated ``chunks`` and how many bytes were cut
    before them."""
    kept = bytearray()
    cut = 0
    for chunk in chunks:
        kept += chunk
        if len(kept) > max_bytes:
            cut += len(kept) - max_bytes
            del kept[: len(kept) - max_bytes]
    return bytes(kept), cut


def _gunzipped(body: Any, limit: int) -> Iterator[bytes]:
    """The decompressed chunks of the gzip stream ``body`` (a file-like object), at most
    ``limit`` bytes in all; several gzip members are read one after the other, as gzip
    does. Raises OSError, EOFError or zlib.error for data that is not gzip."""
    left = limit
    with gzip.GzipFile(fileobj=body, mode="rb") as unzipped:
        while left > 0:
            chunk = unzipped.read(min(2**20, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def read_tail(
    s3: Any, bucket: str, key: str, max_bytes: int | None = None
) -> tuple[bytes, int, str]:
    """The last ``max_bytes`` (default ``jobs.logs.MAX_BYTES``) of object ``key``,
    gunzipped when the key ends in ``.gz``; how many bytes before them were cut; and a
    note for the reader ("" or why not all of it was read).

    A plain object is read with a Range request for its tail. A ``.gz`` object must be
    read from its start: at most MAX_GZ_READ compressed bytes (a larger one is not read:
    the note says so) and MAX_GUNZIPPED decompressed (the tail is then of that part, and
    the note says so). Raises botocore's ClientError (NoSuchKey for a missing object) or
    BotoCoreError."""
    max_bytes = logs.MAX_BYTES if max_bytes is None else max_bytes
    if not key.endswith(".gz"):
        try:
            answer = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{max_bytes}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            return b"", 0, ""  # an empty object has no last bytes
        size = int(answer.get("ContentRange", "/0").rsplit("/", 1)[-1] or 0)
        data = answer["Body"].read()
        return data, max(0, size - len(data)), ""
    head = s3.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] > MAX_GZ_READ:
        note = (
            f"This log is {head['ContentLength'] // 2**20} MiB compressed, too large to "
            f"show here (at most {MAX_GZ_READ // 2**20} MiB): read it from S3."
        )
        return b"", 0, note
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        data, cut = _tail(_gunzipped(body, MAX_GUNZIPPED + 1), max_bytes)
    except (OSError, EOFError, zlib.error) as exc:
        return b"", 0, f"This log could not be gunzipped: {exc}"
    finally:
        body.close()
    total = cut + len(data)
    note = ""
    if total > MAX_GUNZIPPED:
        note = f"Only the first {MAX_GUNZIPPED // 2**20} MiB of this log were read."
    return data, cut, note


def log_text(s3: Any, bucket: str, key: str, masker: logs.Masker) -> str:
    """Object ``key``'s text as a reader sees it: its tail (``read_tail``), decoded, its
    cut first line dropped and every secret masked (``jobs.logs.as_text``), after the
    note if any. Raises what ``read_tail`` raises."""
    data, cut, note = read_tail(s3, bucket, key)
    text = logs.as_text(data, cut, masker)
    return f"[{note}]\n{text}" if note else text


# --- Views -------------------------------------------------------------------------------------


class AuthenticatedRequest(HttpRequest):
    """A request of a signed-in user: LoginRequiredMiddleware admits no other here."""

    user: User


def cluster_for_owner(user: User, pk: int) -> Cluster:
    """The EMR cluster ``pk`` if ``user`` owns it and it was launched (has a job flow id),
    else Http404: staff too, as ``clusters.ui_proxy.cluster_for_owner`` decides for a
    local cluster's Spark UI (see the module docstring). Any state: an ended cluster's
    logs are the ones most wanted."""
    return get_object_or_404(
        Cluster.objects.filter(owner=user, backend=Cluster.Backend.EMR).exclude(jobflow_id=""),
        pk=pk,
    )


@require_safe
def cluster_logs(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """The Logs section of an EMR cluster's page: its log objects grouped, with size and
    time; a whole page unless htmx asks (then the section alone). 404 as in
    ``cluster_for_owner``; an S3 error is said in the section (status 200, so htmx swaps
    it in)."""
    cluster = cluster_for_owner(request.user, pk)
    location = log_location(cluster.jobflow_id)
    error = ""
    listing = Listing(location)
    try:
        listing = list_logs(s3_client(), location, MAX_LISTED)
    except (ClientError, BotoCoreError) as exc:
        error = f"S3 did not list the logs: {exc}"
    context = {"cluster": cluster, "listing": listing, "error": error, "max_listed": MAX_LISTED}
    if request.headers.get("HX-Request"):
        return render(request, "clusters/_emr_logs.html", context)
    return render(request, "clusters/cluster_logs.html", context)


@require_safe
def cluster_log(request: AuthenticatedRequest, pk: int, path: str) -> HttpResponse:
    """One log object of an EMR cluster as text/plain: gunzipped, its last
    ``jobs.logs.MAX_BYTES``, masked (``jobs.logs.known_secrets``). Untrusted text: never
    sniffed, and sandboxed should a browser render it anyway. 404 as in
    ``cluster_for_owner`` and for a missing object; 400 for a path ``key_for`` refuses;
    502 when S3 does not answer."""
    cluster = cluster_for_owner(request.user, pk)
    location = log_location(cluster.jobflow_id)
    try:
        key = key_for(location, path)
    except PathRefused:
        return _text("This path does not lead into the cluster's logs.", 400)
    masker = logs.Masker(logs.known_secrets(cluster))
    try:
        text = log_text(s3_client(), location.bucket, key, masker)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise Http404("No such log.") from None
        return _text(f"S3 refused to read the log: {code}", 502)
    except BotoCoreError as exc:
        return _text(f"S3 did not answer: {exc}", 502)
    return _text(text, 200)


def _text(text: str, status: int) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = LOG_POLICY
    response["Referrer-Policy"] = "no-referrer"
    return response
