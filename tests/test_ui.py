"""The web archive browser: login, scopes, CSRF, search, archive downloads, jobs, and a real browser."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import select

from recorder import pipeline
from recorder.app import create_app, services
from recorder.config import Settings
from recorder.grouping import Gap
from recorder.store.db import transaction
from recorder.store.models import Archive, Broadcast, Fragment
from recorder.ui import auth
from recorder.ui import timeline as svg
from tests.factories import ADMIN, BUCKET, READER, fragment_body
from tests.factories import auth as bearer
from tests.test_pipeline import Clock, run_until_quiet, send_fragments

DAY = datetime(2025, 3, 14, 9, 0, tzinfo=UTC).timestamp()
ROOT = Path(__file__).parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the pages sit on the queries the API tests run on both databases."""
    return f"sqlite:///{tmp_path / 'recorder.db'}"


def login(client: FlaskClient, token: str = ADMIN) -> None:
    assert client.post("/ui/login", data={"token": token}).status_code == 302


def csrf_of(client: FlaskClient, path: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(path).get_data(as_text=True))
    assert match, f"no CSRF field on {path}"
    return match[1]


def broadcast_ids(html: str) -> list[str]:
    return re.findall(r'href="/ui/broadcasts/(b[0-9a-f]+)"', html)


@pytest.fixture
def streams(settings: Settings, client: FlaskClient) -> dict[str, list[str]]:
    """Grouped but not stitched: class_a on 14 and 15 March 2025, class_b and room_c on the 14th."""
    plan = [("class_a", 0), ("class_a", 8), ("class_a", 86400), ("class_b", 600), ("room_c", 1200)]
    for n, (stream, offset) in enumerate(plan):
        body = fragment_body(stream, f"f{n}", DAY + offset)
        assert client.post("/v1/callbacks/tencent", json=body).status_code == 200
    ctx = pipeline.Context.build(settings)
    ctx.clock = lambda: time.time() + 10
    for event_id in pipeline.sweep(ctx).events:
        pipeline.handle_event(ctx, event_id)
    with ctx.sessions() as session:
        rows = session.execute(select(Broadcast.stream_id, Broadcast.id).order_by(Broadcast.started_at)).all()
    ids: dict[str, list[str]] = {}
    for stream, broadcast_id in rows:
        ids.setdefault(stream, []).append(broadcast_id)
    return ids


@pytest.fixture
def archived(settings: Settings, client: FlaskClient, media_url: str, media_dir: Path) -> str:
    """class_math_01 on 14 March 2025: three 6 s fragments 2 s apart, stitched and archived for real."""
    ctx = pipeline.Context.build(settings)
    ctx.clock = Clock()
    send_fragments(client, media_url, media_dir, stream_id="class_math_01", start=DAY, copies=1)
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    with ctx.sessions() as session:
        return session.execute(select(Broadcast.id).filter_by(stream_id="class_math_01")).scalar_one()


# --- login, scopes, CSRF ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui", "/ui/broadcasts/b1", "/ui/jobs", "/ui/jobs/j1", "/ui/archives/b1/1/mp4"])
@pytest.mark.parametrize("cookie", [None, "wrong-token"])
def test_pages_redirect_to_login_without_a_valid_cookie(client: FlaskClient, path: str, cookie: str | None) -> None:
    if cookie:
        client.set_cookie(auth.COOKIE, cookie, path="/ui")
    answer = client.get(path)
    assert answer.status_code == 302 and answer.location == f"/ui/login?next={path}"
    polled = client.get("/ui/jobs/j1.json")
    assert polled.status_code == 401 and polled.get_json() == {"code": 401, "error": "log in at /ui/login"}


def test_login_sets_a_strict_http_only_cookie_and_logout_clears_it(client: FlaskClient) -> None:
    assert client.get("/ui/login").status_code == 200
    assert client.get("/ui/static/ui.css").status_code == 200  # styles need no login

    refused = client.post("/ui/login", data={"token": "nope"})
    assert refused.status_code == 401 and "not valid" in refused.get_data(as_text=True)
    assert "Set-Cookie" not in refused.headers

    answer = client.post("/ui/login", data={"token": READER, "next": "/ui/jobs"})
    assert answer.status_code == 302 and answer.location == "/ui/jobs" and READER not in answer.location
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{auth.COOKIE}={READER};")
    assert {"HttpOnly", "Path=/ui", "SameSite=Strict"} <= {part.strip() for part in cookie.split(";")}
    assert "Secure" not in cookie
    assert client.get("/ui").status_code == 200

    cleared = client.get("/ui/logout")
    assert cleared.status_code == 302 and cleared.location == "/ui/login"
    assert "Expires=Thu, 01 Jan 1970" in cleared.headers["Set-Cookie"]
    assert client.get("/ui").status_code == 302

    secure = client.post("/ui/login", data={"token": ADMIN}, base_url="https://recorder.example")
    assert "Secure" in secure.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "target", ["//evil.example/ui", "https://evil.example/", "/v1/broadcasts", "/uix", "/ui?x=1\r\nSet-Cookie: a=b"]
)
def test_login_only_redirects_inside_the_ui(client: FlaskClient, target: str) -> None:
    answer = client.post("/ui/login", data={"token": ADMIN, "next": target})
    assert answer.location == "/ui"


def test_read_only_token_can_look_but_not_act(app: Flask, client: FlaskClient, streams: dict[str, list[str]]) -> None:
    login(client, READER)
    broadcast_id = streams["class_b"][0]
    page = client.get(f"/ui/broadcasts/{broadcast_id}").get_data(as_text=True)
    assert "class_b" in page and "read-only" in page
    assert "Stitch now" not in page and 'name="csrf"' not in page
    assert "Declare a broadcast window" not in client.get("/ui").get_data(as_text=True)
    assert "New job" not in client.get("/ui/jobs").get_data(as_text=True)

    with app.test_request_context():
        reader_csrf = auth.csrf_token(READER)
    for path in (f"/ui/broadcasts/{broadcast_id}/stitch", "/ui/broadcasts", "/ui/jobs"):
        answer = client.post(path, data={"csrf": reader_csrf})
        assert answer.status_code == 403 and "read-only" in answer.get_data(as_text=True)


def test_actions_need_the_csrf_token_of_the_session(
    app: Flask, client: FlaskClient, streams: dict[str, list[str]]
) -> None:
    login(client)
    broadcast_id = streams["class_b"][0]
    stitch = f"/ui/broadcasts/{broadcast_id}/stitch"
    with app.test_request_context():
        reader_csrf = auth.csrf_token(READER)
    for form in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": reader_csrf}, {"csrf": "\u00e9"}):
        answer = client.post(stitch, data=form)
        assert answer.status_code == 403 and "CSRF" in answer.get_data(as_text=True)
    assert client.get(f"/v1/broadcasts/{broadcast_id}", headers=bearer()).get_json()["status"] == "settling"

    csrf = csrf_of(client, f"/ui/broadcasts/{broadcast_id}")
    answer = client.post(stitch, data={"csrf": csrf})
    assert answer.status_code == 302 and answer.location == f"/ui/broadcasts/{broadcast_id}"
    assert client.get(f"/v1/broadcasts/{broadcast_id}", headers=bearer()).get_json()["status"] == "stitching"
    assert client.post("/ui/broadcasts/nope/stitch", data={"csrf": csrf}).status_code == 404


def test_pages_send_security_headers(client: FlaskClient) -> None:
    login(client)
    answer = client.get("/ui")
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


# --- search and broadcast pages ------------------------------------------------------


def test_search_by_stream_exact_or_prefix_date_and_status(client: FlaskClient, streams: dict[str, list[str]]) -> None:
    login(client, READER)

    def found(**query: str) -> list[str]:
        answer = client.get("/ui", query_string=query)
        assert answer.status_code == 200
        return broadcast_ids(answer.get_data(as_text=True))

    a, b, c = streams["class_a"], streams["class_b"], streams["room_c"]
    assert found() == [a[1], *c, *b, a[0]]  # newest first
    assert found(stream_id=" class_a ") == [a[1], a[0]]
    assert found(stream_id="class_") == []
    assert found(stream_id="class_", match="prefix") == [a[1], *b, a[0]]
    assert found(date="2025-03-15") == [a[1]]
    assert found(stream_id="class_a", date="2025-03-14") == [a[0]]
    assert found(date="2025-03-16") == []
    assert found(status="archived") == []
    assert len(found(status="settling")) == 4

    page = client.get("/ui", query_string={"stream_id": "class_a", "date": "2025-03-14"}).get_data(as_text=True)
    assert "2025-03-14 09:00:00" in page and "12.0 s" in page  # two 6 s fragments; the gap is not padded
    assert "No broadcasts match" in client.get("/ui?stream_id=nobody").get_data(as_text=True)
    bad = client.get("/ui?date=14.3.2025")
    assert bad.status_code == 400 and "date: Input should be a valid date" in bad.get_data(as_text=True)


@pytest.mark.parametrize(
    "query, reason",
    [
        ("date=9999-12-31", "date"),
        ("stream_id=a%00b", "stream_id"),
        ("status=bogus", "status"),
        ("date=2026-02-30", "date"),
    ],
)
def test_search_refuses_what_it_cannot_look_for(client: FlaskClient, query: str, reason: str) -> None:
    login(client, READER)
    answer = client.get(f"/ui?{query}")
    assert answer.status_code == 400 and reason in answer.get_data(as_text=True)


def test_search_pages_with_a_cursor(client: FlaskClient, streams: dict[str, list[str]]) -> None:
    login(client, READER)
    seen, url = [], "/ui?match=prefix&stream_id=&limit=1"
    while url:
        html = client.get(url).get_data(as_text=True)
        seen += broadcast_ids(html)
        link = re.search(r'href="([^"]+)" rel="next"', html)
        url = link[1].replace("&amp;", "&") + "&limit=1" if link else ""
    assert sorted(seen) == sorted(sum(streams.values(), []))


def test_declare_a_window_from_the_search_page(client: FlaskClient, streams: dict[str, list[str]]) -> None:
    login(client)
    form = {"stream_id": "class_a", "start": "2025-03-14T08:59", "end": "2025-03-14T09:30", "app": "", "appname": ""}
    answer = client.post("/ui/broadcasts", data={**form, "csrf": csrf_of(client, "/ui")})
    assert answer.status_code == 302
    page = client.get(answer.location).get_data(as_text=True)
    assert "declared window" in page and "2 (mp4), 1 gap" in page
    bad = client.post("/ui/broadcasts", data={**form, "end": "2025-03-14T08:00", "csrf": csrf_of(client, "/ui")})
    assert bad.status_code == 400 and "end must be after start" in bad.get_data(as_text=True)


def test_broadcast_page_shows_timeline_joins_versions_and_player(client: FlaskClient, archived: str) -> None:
    login(client, READER)
    page = client.get(f"/ui/broadcasts/{archived}").get_data(as_text=True)
    assert page.count('class="bar fragment') == 3 and page.count('<g class="gap">') == 2
    assert page.count('<g class="join">') == 2 and 'class="bar piece"' in page
    assert ">v1 mp4</text>" in page
    assert f'<video class="player" controls preload="metadata" src="/ui/archives/{archived}/1/mp4">' in page
    assert page.count("<td>copy</td>") == 3  # the joins table of the manifest
    assert f"/ui/archives/{archived}/1/mp4?download=1" in page
    assert client.get("/ui/broadcasts/nope").status_code == 404


def test_timeline_places_overlaps_left_out_pieces_and_unread_manifests() -> None:
    fragments = [
        Fragment(start=DAY, end=DAY + 60, file_size=None, error=None),
        Fragment(start=DAY + 50, end=DAY + 120, file_size=10, error=None),  # overlaps the first by 10 s
        Fragment(start=DAY + 400, end=DAY + 460, file_size=10, error="broken: no moov atom"),
    ]
    pieces = [
        svg.Piece(DAY, DAY + 60, "copy", 0.0, 0.0),
        svg.Piece(DAY + 50, DAY + 120, "copy", 60.0, 10.0),
        svg.Piece(DAY + 400, DAY + 460, "left out: broken: no moov atom", None, 0.0),
    ]
    drawn = svg.build(
        fragments,
        [Gap(DAY + 120, DAY + 400)],
        [svg.Version("v1 mp4", 120, pieces), svg.Version("v2 mp4", 120, None)],
        span=(DAY, DAY + 600),  # a declared window wider than its fragments
    )
    fragment_row, v1, v2 = drawn.rows
    assert [b.kind for b in fragment_row.bars] == ["fragment", "fragment alt", "fragment error"]
    assert fragment_row.bars[0].x == svg.LEFT and drawn.ticks[0].label == "09:00" and len(drawn.ticks) == 6
    assert [b.kind for b in v1.bars] == ["piece", "piece", "piece left-out"]
    assert v1.bars[1].x == fragment_row.bars[0].x + fragment_row.bars[0].width  # drawn from where the overlap ends
    assert [j.title for j in v1.joins] == ["join (copy) at 60.00 s into the archive"]
    assert v2.bars[0].label == "2 min 00 s (no manifest)" and v2.bars[0].width == svg.WIDTH - svg.LEFT - svg.RIGHT
    assert drawn.gaps[0].label == "4 min 40 s" and "09:02:00 → 09:06:40" in drawn.gaps[0].title
    assert "broken: no moov atom" in fragment_row.bars[2].title


# --- archives --------------------------------------------------------------------------


def test_archive_route_streams_a_file_store_with_ranges(client: FlaskClient, archived: str) -> None:
    login(client, READER)
    url = f"/ui/archives/{archived}/1/mp4"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.mimetype == "video/mp4"
    data = whole.get_data()
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.get_data() == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert client.get(url, headers={"If-None-Match": whole.headers["ETag"]}).status_code == 304
    download = client.get(url + "?download=1")
    assert download.headers["Content-Disposition"] == f"attachment; filename={archived}-v1.mp4"
    assert client.get(f"/ui/archives/{archived}/2/mp4").status_code == 404
    assert client.get(f"/ui/archives/{archived}/1/flv").status_code == 404
    assert client.get(f"/ui/archives/{archived}/{2**70}/mp4").status_code == 404
    assert client.get(f"/ui/archives/{archived}/1/mkv").status_code == 404
    assert client.get("/ui/archives/a%00b/1/mp4").status_code == 404


def test_archive_route_redirects_to_a_presigned_url_on_s3(settings: Settings, s3_server: str) -> None:
    app = create_app(settings.model_copy(update={"storage_url": f"s3://{BUCKET}/ui", "s3_endpoint_url": s3_server}))
    client = app.test_client()
    declared = client.post(
        "/v1/broadcasts", json={"stream_id": "s", "start": DAY, "end": DAY + 60}, headers=bearer()
    ).get_json()
    with app.app_context(), transaction(services().sessions) as session:
        key = f"ui/app/s/2025/03/14/{declared['id']}-v1.mp4"
        session.add(
            Archive(
                broadcast_id=declared["id"],
                version=1,
                format="mp4",
                key=key,
                manifest_key=key.replace(".mp4", ".json"),
                size=1,
                sha256="0" * 64,
                duration=60,
                created_at=DAY,
            )
        )
        session.get_one(Broadcast, declared["id"]).version = 1
    login(client, READER)
    answer = client.get(f"/ui/archives/{declared['id']}/1/mp4")
    assert answer.status_code == 302 and answer.location.startswith(f"{s3_server}/{BUCKET}/{key}?")
    assert "Signature" in answer.location
    page = client.get(f"/ui/broadcasts/{declared['id']}").get_data(as_text=True)
    assert "1 min 00 s (no manifest)" in page


# --- jobs ---------------------------------------------------------------------------------


CSV = "stream_id,file_format,start_time,end_time,video_url,file_size\n" + "".join(
    f"{stream},mp4,{int(DAY) + start},{int(DAY) + start + 6},http://media.example/{stream}-{start}.mp4,1000\n"
    for stream in ("imp_x", "imp_y")
    for start in (0, 10)
)


def test_jobs_dry_run_import_then_the_same_job_once(client: FlaskClient) -> None:
    login(client)
    form = {"kind": "import", "format": "", "timezone": "+08:00", "dry_run": "on"}

    def submit(**extra: str) -> str:
        data = {**form, **extra, "csrf": csrf_of(client, "/ui/jobs"), "file": (BytesIO(CSV.encode()), "list.csv")}
        answer = client.post("/ui/jobs", data=data, content_type="multipart/form-data")
        assert answer.status_code == 302, answer.get_data(as_text=True)
        return answer.location

    first = submit()
    page = client.get(first).get_data(as_text=True)
    assert "Proposed broadcasts (2)" in page and page.count("2 (2 new)") == 2 and "4.0 s" in page
    again = submit()
    assert again == f"{first}?existing=1"
    assert "nothing was started twice" in client.get(again).get_data(as_text=True)

    del form["dry_run"]
    real = submit()
    job_id = real.rsplit("/", 1)[1]
    page = client.get(real).get_data(as_text=True)
    assert f'data-job="/ui/jobs/{job_id}.json" data-state="queued"' in page
    polled = client.get(f"/ui/jobs/{job_id}.json")
    assert polled.get_json() == client.get(f"/v1/jobs/{job_id}", headers=bearer()).get_json()
    listing = client.get("/ui/jobs").get_data(as_text=True)
    assert listing.count("<progress") == 2 and "dry run" in listing


def test_stitch_job_by_prefix_as_a_dry_run(client: FlaskClient, streams: dict[str, list[str]]) -> None:
    login(client)
    form = {"kind": "stitch", "stream_prefix": "class_", "since": "2025-03-14T00:00", "until": "2025-03-14T23:59"}
    answer = client.post("/ui/jobs", data={**form, "dry_run": "on", "csrf": csrf_of(client, "/ui/jobs")})
    assert answer.status_code == 302
    page = client.get(answer.location).get_data(as_text=True)
    assert "Proposed broadcasts (2)" in page and "class_a" in page and "class_b" in page and "room_c" not in page
    both = client.post("/ui/jobs", data={**form, "stream_ids": "class_a", "csrf": csrf_of(client, "/ui/jobs")})
    assert both.status_code == 400 and "exactly one of stream_ids and stream_prefix" in both.get_data(as_text=True)


# --- a real browser ----------------------------------------------------------------------


@pytest.fixture
def browser_page(server: str) -> Iterator[Page]:
    """Debian's chromium, headless, logged in through the form as an admin."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's chromium is not at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server}/ui")
        assert page.url == f"{server}/ui/login?next=/ui"
        page.fill("input[name=token]", ADMIN)
        page.click("button[type=submit]")
        assert page.url == f"{server}/ui"
        yield page
        browser.close()


def test_browser_finds_a_broadcast_sees_its_timeline_and_plays_it(
    browser_page: Page, server: str, archived: str
) -> None:
    page = browser_page
    page.fill("input[name=stream_id]", "class_math_01")
    page.fill("input[name=date]", "2025-03-14")
    page.click("button:text('Search')")
    page.click("table.list a:text('class_math_01')")
    assert page.url == f"{server}/ui/broadcasts/{archived}"

    timeline = page.locator("svg.timeline")
    assert timeline.locator("g.fragment").count() == 3
    assert timeline.locator("g.gap").count() == 2 and timeline.locator("g.join").count() == 2
    assert timeline.locator("g.gap text").first.text_content() == "2.0 s"

    # Awaited in the page: its CSP (no eval) rules out wait_for_function's string predicates.
    video = page.locator("video")
    video.evaluate("v => v.play()")  # resolves once playback has started
    played = video.evaluate(
        "v => new Promise(done => { const check = () => v.currentTime > 1 ? done(v.currentTime) :"
        " setTimeout(check, 50); check(); })"
    )
    assert played > 1 and video.evaluate("v => v.readyState") >= 2
    video.evaluate(  # pause on a frame of the second fragment for the screenshot
        "v => new Promise(done => { v.pause(); v.addEventListener('seeked', done, {once: true}); v.currentTime = 7; })"
    )

    video.hover()  # shows the player's controls in the screenshot
    shot = ROOT / "test-artifacts" / "broadcast-page.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000


def test_browser_job_page_follows_progress_live(
    browser_page: Page, server: str, settings: Settings, archived: str
) -> None:
    page = browser_page
    page.goto(f"{server}/ui/jobs")
    page.check("input[name=kind][value=stitch]")
    assert page.locator("input[name=file]").is_hidden()
    page.fill("textarea[name=stream_ids]", "class_math_01")
    page.fill("input[name=since]", "2025-03-14T00:00")
    page.fill("input[name=until]", "2025-03-15T00:00")
    page.uncheck("input[name=dry_run]")
    page.click("button:text('Submit job')")
    expect(page.locator("[data-status]")).to_have_text("queued")
    job_id = page.url.rsplit("/", 1)[1]

    # The worker's steps, in-process; the page learns of each by polling, without a reload.
    ctx = pipeline.Context.build(settings)
    ctx.clock = Clock()
    ctx.clock.now += 3600
    assert pipeline.run_job(ctx, job_id) == [archived]
    expect(page.locator("[data-status]")).to_have_text("running")
    expect(page.locator("[data-counts]")).to_have_text("0 done, 0 failed of 1")
    assert pipeline.stitch_broadcast(ctx, archived) == "archived"
    expect(page.locator("[data-status]")).to_have_text("done")
    expect(page.locator("[data-counts]")).to_have_text("1 done, 0 failed of 1")
    expect(page.locator("[data-broadcasts] td.num")).to_have_text("v2")
