"""An httpx client of the portal's REST API (docs/api.md), with retries of transient errors.

Every call returns the API's JSON (dicts and lists, as documented) or raises ``ApiError``
carrying the API's stable ``code`` and human ``detail``. Transient failures (the
connection, 502, 503, 504) are retried with exponential backoff and jitter, up to
``attempts`` tries, and only where a retry cannot do a thing twice: reads, state changes
that are idempotent by nature (pause, cancel, terminate) and requests carrying an
``Idempotency-Key`` (run now). A request without that guarantee (launching a cluster) is
retried only when the connection was never made, so the server never saw it.
"""

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from portalctl.config import Config

#: Responses worth another try: a proxy or the server itself is briefly unavailable.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
#: Run states after which nothing changes any more (jobs.models.Run.FINAL_STATES).
FINAL_RUN_STATES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST", "SKIPPED"})
#: Cluster states a launch waits for (clusters.models.Cluster.State).
SETTLED_CLUSTER_STATES = frozenset({"READY", "TERMINATING", "TERMINATED", "FAILED"})
#: The longest pause between two tries (seconds), whatever Retry-After asks for.
MAX_DELAY = 30.0


class ApiError(Exception):
    """A refused or failed request: HTTP ``status`` (0 when the server was not reached),
    the API's ``code`` (docs/api.md "Errors"), its ``detail`` and per-field ``errors``."""

    def __init__(
        self, status: int, code: str, detail: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors or {}

    def __str__(self) -> str:
        return self.detail

    @classmethod
    def from_response(cls, response: httpx.Response) -> "ApiError":
        """The error a response carries: its JSON ``code`` and ``detail`` when it has them
        (every API error does), else the status line (a proxy's page, say)."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "detail" in body:
            errors = body.get("errors")
            return cls(
                response.status_code,
                str(body.get("code") or f"http_{response.status_code}"),
                str(body["detail"]),
                errors if isinstance(errors, dict) else None,
            )
        phrase = response.reason_phrase or "error"
        return cls(
            response.status_code,
            f"http_{response.status_code}",
            f"HTTP {response.status_code} {phrase} from {response.request.url}",
        )


def new_idempotency_key() -> str:
    """A fresh key for one logical request: a random UUID, reused by its retries."""
    return str(uuid.uuid4())


def _user_agent() -> str:
    try:
        return f"portalctl/{version('analysis-portal')}"
    except PackageNotFoundError:
        return "portalctl"


class PortalClient:
    """The portal's API as methods. ``transport`` and ``sleep`` are for tests (an
    ``httpx.MockTransport``, a fake clock); ``attempts`` counts the first try;
    ``backoff`` is the first pause in seconds, doubled at each further try."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 5,
        backoff: float = 0.5,
        timeout: float = 60.0,
    ) -> None:
        self.config = config
        self.sleep = sleep
        self.attempts = max(1, attempts)
        self.backoff = backoff
        #: The server's clock at the last response (its Date header), UTC.
        self.server_now: datetime | None = None
        self.http = httpx.Client(
            base_url=config.url,
            headers={
                "Authorization": f"Bearer {config.token}",
                "Accept": "application/json",
                "User-Agent": _user_agent(),
            },
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "PortalClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Transport ---------------------------------------------------------------------------

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based): the server's
        Retry-After when it gives one in seconds, else exponential backoff with jitter
        (between half and all of ``backoff * 2**(attempt-1)``), at most MAX_DELAY."""
        if response is not None:
            after = response.headers.get("Retry-After", "")
            if after.isdigit():
                return min(MAX_DELAY, float(after))
        ceiling = min(MAX_DELAY, self.backoff * 2 ** (attempt - 1))
        return ceiling * (0.5 + random.random() / 2)

    def send(
        self, method: str, path: str, *, retry: bool = True, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send a request, retrying transient failures; return the successful response.

        ``retry`` says the request may be repeated safely; when False it is retried only
        if the connection was never made. With ``stream`` the body is not read: the
        caller must close the response. Raises ApiError: the API's error for a 4xx or
        5xx, code ``connection_error`` (status 0) when the server could not be reached.
        """
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            request = self.http.build_request(method, path, **kwargs)
            try:
                response = self.http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise self._unreachable(exc) from None
            except httpx.TransportError as exc:
                # The request may have reached the server: repeat it only if that is safe.
                if last or not retry:
                    raise self._unreachable(exc) from None
            else:
                self._note_date(response)
                if response.status_code in TRANSIENT_STATUSES and retry and not last:
                    response.close()
                    self.sleep(self.delay(attempt, response))
                    continue
                if response.is_error:
                    response.read()
                    response.close()
                    raise ApiError.from_response(response)
                return response
            self.sleep(self.delay(attempt))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _unreachable(self, exc: Exception) -> ApiError:
        return ApiError(0, "connection_error", f"cannot reach {self.config.url}: {exc}")

    def _note_date(self, response: httpx.Response) -> None:
        try:
            self.server_now = parsedate_to_datetime(response.headers["Date"]).astimezone(UTC)
        except (KeyError, TypeError, ValueError):
            self.server_now = datetime.now(UTC)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """``send`` and return the response's JSON (None for an empty body)."""
        response = self.send(method, path, **kwargs)
        return response.json() if response.content else None

    def _list(self, path: str, params: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` items of a list route, following its pagination (a plain list,
        or DRF's ``{"results": [...], "next": URL}``). ``next`` is followed on the
        configured origin only, so the token never goes anywhere else."""
        items: list[dict[str, Any]] = []
        url: str | None = path
        query: dict[str, Any] | None = {k: v for k, v in params.items() if v is not None}
        while url and len(items) < limit:
            body = self.call("GET", url, params=query)
            if isinstance(body, list):
                items.extend(body)
                break
            items.extend(body.get("results", []))
            url = self._relative(body.get("next"))
            query = None  # the next page's URL carries the filters and the cursor
        return items[:limit]

    def _relative(self, url: str | None) -> str | None:
        """A pagination link as a path below the configured URL, whatever host it names."""
        if not url:
            return None
        parts = urlsplit(url)
        path = parts.path
        prefix = self.http.base_url.path.rstrip("/")
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix) :]
        return path + (f"?{parts.query}" if parts.query else "")

    # --- Routes ------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """GET /api/me/: the user and the token's scopes."""
        return self.call("GET", "/api/me/")

    def jobs(self, mine: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """GET /api/jobs/: jobs the caller may see (``mine``: own only)."""
        return self._list("/api/jobs/", {"mine": 1 if mine else None}, limit)

    def job(self, job_id: int) -> dict[str, Any]:
        return self.call("GET", f"/api/jobs/{job_id}/")

    def pause_job(self, job_id: int) -> dict[str, Any]:
        return self.call("POST", f"/api/jobs/{job_id}/pause/")

    def resume_job(self, job_id: int) -> dict[str, Any]:
        return self.call("POST", f"/api/jobs/{job_id}/resume/")

    def run_notebook(
        self,
        notebook: Path,
        parameters: dict[str, str],
        idempotency_key: str,
        job_id: int | None = None,
    ) -> dict[str, Any]:
        """POST /api/runs/: run a notebook file. Without ``job_id`` the server reuses one
        manual job per user and file name (a new version when the file changed); with
        it, the file becomes that job's new version when it changed. Retries send the
        same ``Idempotency-Key``, so they return the same run."""
        data: dict[str, str] = {"parameters": json.dumps(parameters)}
        if job_id is not None:
            data["job"] = str(job_id)
        files = {"notebook": (notebook.name, notebook.read_bytes(), "application/x-ipynb+json")}
        headers = {"Idempotency-Key": idempotency_key}
        return self.call("POST", "/api/runs/", data=data, files=files, headers=headers)

    def run_job(
        self, job_id: int, parameters: dict[str, str], idempotency_key: str
    ) -> dict[str, Any]:
        """POST /api/jobs/{id}/run/: run a job's current version now."""
        return self.call(
            "POST",
            f"/api/jobs/{job_id}/run/",
            json={"parameters": parameters},
            headers={"Idempotency-Key": idempotency_key},
        )

    def runs(
        self, job_id: int | None = None, state: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """GET /api/runs/: runs, newest first, optionally of one job and one state."""
        return self._list("/api/runs/", {"job": job_id, "state": state}, limit)

    def run(self, run_id: int) -> dict[str, Any]:
        return self.call("GET", f"/api/runs/{run_id}/")

    def cancel_run(self, run_id: int) -> dict[str, Any]:
        return self.call("POST", f"/api/runs/{run_id}/cancel/")

    def download_output(self, run_id: int, dest: Path, kind: str = "ipynb") -> int:
        """Stream GET /api/runs/{id}/output.{kind} into ``dest``; return its size in bytes.

        Written to a temporary file next to ``dest`` and renamed, so ``dest`` is never a
        partial download. Raises ApiError (code ``no_output`` for a run without one).
        """
        tmp = dest.with_name(f".{dest.name}.part")
        with self._streamed("GET", f"/api/runs/{run_id}/output.{kind}") as response:
            size = 0
            with open(tmp, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        tmp.replace(dest)
        return size

    @contextmanager
    def _streamed(self, method: str, path: str) -> Iterator[httpx.Response]:
        response = self.send(method, path, stream=True)
        try:
            yield response
        finally:
            response.close()

    def clusters(self, limit: int = 100) -> list[dict[str, Any]]:
        """GET /api/clusters/: the caller's clusters (staff: all)."""
        return self._list("/api/clusters/", {}, limit)

    def cluster(self, cluster_id: int) -> dict[str, Any]:
        return self.call("GET", f"/api/clusters/{cluster_id}/")

    def cluster_named(self, name: str) -> dict[str, Any]:
        """The caller's live cluster called ``name`` (names are unique among one's live
        clusters), else the newest of that name; raises ApiError (404) if none."""
        mine = [c for c in self.clusters(limit=1000) if c.get("name") == name]
        live = [c for c in mine if c.get("state") not in ("TERMINATED", "FAILED")]
        found = (live or mine)[:1]
        if not found:
            raise ApiError(404, "not_found", f"You have no cluster named {name!r}.")
        return found[0]

    def launch_cluster(self, spec: dict[str, Any]) -> dict[str, Any]:
        """POST /api/clusters/: launch. Not repeated after the server may have seen it (a
        repeat could launch a second cluster)."""
        return self.call("POST", "/api/clusters/", json=spec, retry=False)

    def terminate_cluster(self, cluster_id: int) -> dict[str, Any]:
        return self.call("POST", f"/api/clusters/{cluster_id}/terminate/")

    def versions(self, job_id: int) -> list[dict[str, Any]]:
        """GET /api/jobs/{id}/versions/: the job's notebook versions, newest first."""
        return self.call("GET", f"/api/jobs/{job_id}/versions/")

    def backfill(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/jobs/{id}/backfill/: start a backfill (``start``, ``end``,
        ``parameters``, ``max_concurrent``, ``rerun_existing``). Not repeated after the
        server may have seen it: a repeat would start a second group."""
        return self.call("POST", f"/api/jobs/{job_id}/backfill/", json=body, retry=False)

    def sweep(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/jobs/{id}/sweep/: start a sweep (``parameters``: name -> values,
        ``combine``, ``max_concurrent``); not repeated either."""
        return self.call("POST", f"/api/jobs/{job_id}/sweep/", json=body, retry=False)

    def groups(self, limit: int = 100) -> list[dict[str, Any]]:
        """GET /api/groups/: backfills and sweeps of jobs the caller may see, newest first."""
        return self._list("/api/groups/", {}, limit)

    def group(self, group_id: int) -> dict[str, Any]:
        """GET /api/groups/{id}/: a group with its progress and the newest run of each item."""
        return self.call("GET", f"/api/groups/{group_id}/")

    def cancel_group(self, group_id: int) -> dict[str, Any]:
        return self.call("POST", f"/api/groups/{group_id}/cancel/")

    def retry_group(self, group_id: int) -> dict[str, Any]:
        """POST /api/groups/{id}/retry/: a new run per failed item. Safe to repeat: once
        retried, an item's newest run is the new one, which has not failed."""
        return self.call("POST", f"/api/groups/{group_id}/retry/")
