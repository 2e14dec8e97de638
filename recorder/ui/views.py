"""The pages: search broadcasts, one broadcast with its timeline and player, jobs with live progress.

Views only read through the same queries as the API and act through ``actions``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal, get_args

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, send_file, url_for
from pydantic import BeforeValidator, Field
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from recorder import actions, imports, queries
from recorder.api.jobs import JOB_BODY_LIMIT
from recorder.api.openapi import DeclareWindow
from recorder.api.params import query_args
from recorder.app import services
from recorder.archive import ArchiveStore
from recorder.errors import BadRequest, NotFound, RecorderError
from recorder.events import MediaFormat, Text
from recorder.grouping import gaps, timeline
from recorder.queries import PageQuery, Status, page, validated
from recorder.store import repository
from recorder.store.models import Archive, Broadcast
from recorder.ui import auth, formatting
from recorder.ui import timeline as svg

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
bp.record_once(lambda state: auth.init_secret(state.app))
bp.add_app_template_filter(formatting.utc, "utc")
bp.add_app_template_filter(formatting.duration, "duration")
bp.add_app_template_filter(formatting.filesize, "filesize")

STATUSES = get_args(Status)
# Chromium plays these inline; FLV and HLS playlists are only offered as downloads.
PLAYERS = {"mp4": "video", "m4a": "audio", "aac": "audio"}
# Inline SVG needs no style-src exception: it is styled by classes from ui.css. Media may
# come from elsewhere: on S3 the archive route redirects to a presigned URL.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' https: http:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@bp.before_request
def _body_limit() -> None:
    if request.endpoint == "ui.submit_job":  # an import uploads its fragment list
        request.max_content_length = JOB_BODY_LIMIT


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(RecorderError)
def _recorder_error(error: RecorderError) -> tuple[Any, int]:
    return _error_page(error.status, error.reason)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[Any, int]:
    return _error_page(error.code or 500, error.description or "")


def _error_page(status: int, reason: str) -> tuple[Any, int]:
    if request.path.endswith(".json"):
        return jsonify(code=status, error=reason), status
    return render_template("ui/error.html", status=status, reason=reason, viewer=auth.viewer()), status


@bp.context_processor
def _viewer() -> dict[str, Any]:
    return {"viewer": g.get("viewer"), "statuses": STATUSES}


# --- login ----------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = auth.safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("ui/login.html", next=target)
    token = request.form.get("token", "").strip()
    if not auth.valid(token):
        return render_template("ui/login.html", next=target, error="That token is not valid."), 401
    response = redirect(target)
    response.set_cookie(auth.COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure, path="/ui")
    return response


@bp.get("/logout")
def logout() -> BaseResponse:
    response = redirect(url_for("ui.login"))
    response.delete_cookie(auth.COOKIE, path="/ui", httponly=True, samesite="Strict", secure=request.is_secure)
    return response


# --- broadcasts ---------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """A row of the search table."""

    broadcast: Broadcast
    duration: float
    size: int | None
    fragments: int
    gaps: int


def _latest(broadcast: Broadcast) -> list[Archive]:
    return [a for a in broadcast.archives if a.version == broadcast.version]


def _summary(broadcast: Broadcast) -> Summary:
    latest = _latest(broadcast)
    fragments = broadcast.fragments
    if latest:
        seconds, size = latest[0].duration, sum(a.size for a in latest)
    else:  # what the archive will hold: the fragments back to back, overlaps once
        seconds = sum(p.fragment.end - p.fragment.start - p.trim for p in timeline(fragments))
        known = [f.file_size for f in fragments if f.file_size is not None]
        size = sum(known) if known and len(known) == len(fragments) else None
    return Summary(broadcast, seconds, size, len(fragments), len(gaps(fragments)))


def _trimmed(value: object) -> object:
    return (value.strip() or None) if isinstance(value, str) else value


class SearchQuery(PageQuery):
    """The search form; a field left empty filters nothing."""

    stream_id: Annotated[Text | None, BeforeValidator(_trimmed)] = None
    match: Literal["exact", "prefix"] = "exact"
    # In UTC; a day whose end a datetime can hold.
    day: Annotated[date | None, BeforeValidator(_trimmed), Field(alias="date", lt=date.max)] = None
    status: Annotated[Status | None, BeforeValidator(_trimmed)] = None

    def filters(self) -> dict[str, str]:
        """The form's fields, to keep them across pages."""
        given = {"stream_id": self.stream_id, "match": self.match, "status": self.status, "date": self.day}
        return {name: str(value) for name, value in given.items() if value}


@bp.get("")
@auth.login_required()
def search() -> str:
    args = query_args(SearchQuery)
    since = until = None
    if args.day is not None:  # broadcasts that overlap the day
        start = datetime.combine(args.day, time(), UTC)
        since, until = start.timestamp(), (start + timedelta(days=1)).timestamp() - 0.001
    prefix = args.match == "prefix"
    query = repository.broadcasts_query(
        stream_id=None if prefix else args.stream_id,
        stream_prefix=args.stream_id if prefix else None,
        status=args.status,
        since=since,
        until=until,
        after=args.after(str),
    ).options(selectinload(Broadcast.fragments), selectinload(Broadcast.archives))
    with services().sessions() as session:
        rows, cursor = page(session, query, args, lambda b: (b.started_at, b.id))
        filters = args.filters()
        return render_template(
            "ui/search.html",
            rows=[_summary(b) for b in rows],
            filters=filters,
            next_page=url_for("ui.search", **filters, cursor=cursor) if cursor else None,
            first_page=url_for("ui.search", **filters) if args.cursor else None,
        )


def _manifest(store: ArchiveStore, archive: Archive) -> list[svg.Piece] | None:
    """The pieces of an archive's manifest; None where it cannot be read locally (S3 stores)."""
    path = store.local_path(archive.manifest_key)
    if path is None:
        return None
    try:
        return svg.pieces(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@bp.get("/broadcasts/<broadcast_id>")
@auth.login_required()
def broadcast(broadcast_id: str) -> str:
    svc = services()
    with svc.sessions() as session:
        found = session.get(Broadcast, broadcast_id)
        if found is None:
            raise NotFound(f"no broadcast {broadcast_id!r}")
        manifests = {a.id: _manifest(svc.store, a) for a in found.archives}
        versions = [svg.Version(f"v{a.version} {a.format}", a.duration, manifests[a.id]) for a in found.archives]
        holes = gaps(found.fragments)
        latest = _latest(found)
        player = next(((a, PLAYERS[_ext(a)]) for a in latest if _ext(a) in PLAYERS), None)
        return render_template(
            "ui/broadcast.html",
            b=found,
            summary=_summary(found),
            gaps=holes,
            timeline=svg.build(found.fragments, holes, versions, span=(found.started_at, found.ended_at)),
            player=player,
            pieces=manifests[latest[0].id] if latest else None,
            ext=_ext,
        )


def _ext(archive: Archive) -> str:
    return archive.key.rpartition(".")[2]


@bp.post("/broadcasts/<broadcast_id>/stitch")
@auth.login_required(admin=True)
def stitch(broadcast_id: str) -> BaseResponse:
    actions.stitch_now(services(), broadcast_id)
    return redirect(url_for("ui.broadcast", broadcast_id=broadcast_id))


@bp.post("/broadcasts")
@auth.login_required(admin=True)
def declare() -> BaseResponse:
    fields = {name: request.form.get(name, "").strip() for name in ("stream_id", "start", "end", "app", "appname")}
    broadcast_id = actions.declare(services(), validated(DeclareWindow, fields, "form"))
    return redirect(url_for("ui.broadcast", broadcast_id=broadcast_id))


@bp.get(f"/archives/<broadcast_id>/<int(max={2**31 - 1}):version>/<any({','.join(MediaFormat)}):fmt>")
@auth.login_required()
def archive_file(broadcast_id: str, version: int, fmt: str) -> BaseResponse:
    """The archive for the player and downloads: streamed with ranges from a file store, else presigned."""
    svc = services()
    with svc.sessions() as session:
        key = session.execute(
            select(Archive.key).filter_by(broadcast_id=broadcast_id, version=version, format=fmt)
        ).scalar_one_or_none()
    if key is None:
        raise NotFound(f"no archive v{version} {fmt} of broadcast {broadcast_id!r}")
    path = svc.store.local_path(key)
    if path is None:
        return redirect(svc.store.url(key, expires=svc.settings.url_expiry_seconds))
    if not path.is_file():
        raise NotFound(f"archive {key} is missing from storage")
    name = key.rpartition("/")[2]
    return send_file(path, conditional=True, as_attachment="download" in request.args, download_name=name)


# --- jobs ------------------------------------------------------------------------


@bp.get("/jobs")
@auth.login_required()
def jobs_list() -> str:
    listed = queries.list_jobs(services(), query_args(PageQuery))
    cursor = listed["next_cursor"]
    return render_template(
        "ui/jobs.html", jobs=listed["items"], next_page=url_for("ui.jobs_list", cursor=cursor) if cursor else None
    )


@bp.get("/jobs/<job_id>")
@auth.login_required()
def job_page(job_id: str) -> str:
    return render_template("ui/job.html", job=queries.show_job(services(), job_id), existing="existing" in request.args)


@bp.get("/jobs/<job_id>.json")
@auth.login_required(json=True)
def job_json(job_id: str) -> dict[str, Any]:
    """What the job page polls: same origin, authorized by the cookie, so no token reaches JavaScript."""
    return queries.show_job(services(), job_id)


@bp.post("/jobs")
@auth.login_required(admin=True)
def submit_job() -> BaseResponse:
    form, dry_run = request.form, "dry_run" in request.form
    if form.get("kind") == "import":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise BadRequest("file: choose a CSV or JSONL fragment list to import")
        data = imports.decode(upload.read())
        fmt = form.get("format") or ("csv" if upload.filename.lower().endswith(".csv") else "jsonl")
        body: dict[str, Any] = {"kind": "import", "format": fmt, "data": data, "dry_run": dry_run}
        if form.get("timezone"):
            body["timezone"] = form["timezone"]
    else:
        body = {"kind": "stitch", "since": form.get("since", ""), "until": form.get("until", ""), "dry_run": dry_run}
        if form.get("stream_prefix", "").strip():
            body["stream_prefix"] = form["stream_prefix"].strip()
        if form.get("stream_ids", "").strip():
            body["stream_ids"] = form["stream_ids"].replace(",", " ").split()
    view, created = actions.submit_job(services(), body)
    return redirect(url_for("ui.job_page", job_id=view["id"], **({} if created else {"existing": 1})))
