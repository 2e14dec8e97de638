"""The CLI's two backends behind one interface: the database directly, or a server over HTTP.

Both answer with the HTTP API's JSON documents and raise ``RecorderError``
subclasses with the API's error text, so the CLI renders and fails the same way
whichever it talks to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import quote

import requests
from sqlalchemy.exc import SQLAlchemyError

from recorder import actions, queries
from recorder.config import Settings
from recorder.errors import BadRequest, Forbidden, NotFound, RecorderError, Unauthorized
from recorder.queries import BroadcastQuery, FragmentQuery, PageQuery, parse_query
from recorder.services import Services

JSON = dict[str, Any]
PAGE_MAX = 500  # the API's largest page


class Unavailable(RecorderError):
    """The database or the server could not be reached, or answered something unexpected."""


class Client(Protocol):
    """``query`` holds the API's query parameters (``limit`` and ``cursor`` included)."""

    def broadcasts(self, query: JSON) -> JSON: ...
    def broadcast(self, broadcast_id: str) -> JSON: ...
    def fragments(self, query: JSON) -> JSON: ...
    def stitch(self, broadcast_id: str) -> JSON:
        """Finalize now or re-stitch one broadcast; the broadcast as it is then."""
        ...

    def submit(self, spec: JSON) -> tuple[JSON, bool]:
        """Submit a job; the job and whether it is new (False: the same inputs were submitted before)."""
        ...

    def job(self, job_id: str) -> JSON: ...
    def jobs(self, query: JSON) -> JSON: ...


def open_client(url: str | None, token: str | None) -> Client:
    return HttpClient(url, token) if url else DirectClient(Settings())


def collect(fetch: Callable[[JSON], JSON], query: JSON, *, everything: bool) -> JSON:
    """One page, or with ``everything`` every page from the query's cursor on, as one list document."""
    if not everything:
        return fetch(query)
    items: list[Any] = []
    query = {**query, "limit": PAGE_MAX}
    while True:
        page = fetch(query)
        items += page["items"]
        if page["next_cursor"] is None:
            return {"items": items, "next_cursor": None}
        query["cursor"] = page["next_cursor"]


class DirectClient:
    """The database named by the settings, through the same functions the API views call."""

    def __init__(self, settings: Settings) -> None:
        with _database():
            self.services = Services.build(settings)

    def broadcasts(self, query: JSON) -> JSON:
        with _database():
            return queries.list_broadcasts(self.services, parse_query(BroadcastQuery, query))

    def broadcast(self, broadcast_id: str) -> JSON:
        with _database():
            return queries.show_broadcast(self.services, broadcast_id)

    def fragments(self, query: JSON) -> JSON:
        with _database():
            return queries.list_fragments(self.services, parse_query(FragmentQuery, query))

    def stitch(self, broadcast_id: str) -> JSON:
        with _database():
            actions.stitch_now(self.services, broadcast_id)
            return queries.show_broadcast(self.services, broadcast_id)

    def submit(self, spec: JSON) -> tuple[JSON, bool]:
        with _database():
            return actions.submit_job(self.services, spec)

    def job(self, job_id: str) -> JSON:
        with _database():
            return queries.show_job(self.services, job_id)

    def jobs(self, query: JSON) -> JSON:
        with _database():
            return queries.list_jobs(self.services, parse_query(PageQuery, query))


@contextmanager
def _database() -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as error:
        raise Unavailable(f"database: {getattr(error, 'orig', None) or error}") from None


# The API's error statuses, as the errors the direct backend raises.
_ERRORS: dict[int, type[RecorderError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound}


class HttpClient:
    """A server's operator API, with a bearer token."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> tuple[JSON, int]:
        try:
            answer = self.http.request(method, self.base + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise Unavailable(f"cannot reach {self.base}: {_cause(error)}") from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.ok and isinstance(body, dict):
            return body, answer.status_code
        reason = body.get("error") if isinstance(body, dict) else None
        if answer.status_code == 401:
            reason = f"{reason or 'unauthorized'} (pass --token or set RECORDER_TOKEN)"
        error = _ERRORS.get(answer.status_code, Unavailable)
        raise error(reason or f"{self.base} answered HTTP {answer.status_code}, not the recorder API's JSON")

    def _get(self, path: str, query: JSON | None = None) -> JSON:
        return self._call("GET", path, params={k: v for k, v in (query or {}).items() if v is not None})[0]

    def broadcasts(self, query: JSON) -> JSON:
        return self._get("/v1/broadcasts", query)

    def broadcast(self, broadcast_id: str) -> JSON:
        return self._get(f"/v1/broadcasts/{quote(broadcast_id, safe='')}")

    def fragments(self, query: JSON) -> JSON:
        return self._get("/v1/fragments", query)

    def stitch(self, broadcast_id: str) -> JSON:
        return self._call("POST", f"/v1/broadcasts/{quote(broadcast_id, safe='')}/stitch")[0]

    def submit(self, spec: JSON) -> tuple[JSON, bool]:
        job, status = self._call("POST", "/v1/jobs", json=spec)
        return job, status == 202

    def job(self, job_id: str) -> JSON:
        return self._get(f"/v1/jobs/{quote(job_id, safe='')}")

    def jobs(self, query: JSON) -> JSON:
        return self._get("/v1/jobs", query)


def _cause(error: Exception) -> str:
    """The useful end of requests' nested message: "Connection refused", not three wrapped reprs."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(error))
    return found[1].strip() if found else type(error).__name__
