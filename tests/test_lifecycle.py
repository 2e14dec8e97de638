"""Real broadcasts: reconnect windows, late fragments, push signals, declared windows,
sessions, overlaps and broken fragments, through the real pipeline in-process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from recorder import pipeline, stitch
from recorder.config import Settings
from recorder.store.models import Broadcast
from tests.factories import auth, record_body, sample, signed
from tests.test_pipeline import Clock, run_until_quiet

START = 1_790_000_000


def fragment(
    media_url: str, media_dir: Path, n: int, start: float, *, clip: int | None = None, **extra: object
) -> dict:  # type: ignore[type-arg]
    name = f"clip{n % 3 if clip is None else clip}.mp4"
    fields = dict(
        stream_id="lesson", file_id=f"lesson-{n}", video_url=f"{media_url}/{name}",
        file_size=(media_dir / name).stat().st_size, start_time=start, end_time=start + 6, duration=6,
        start_time_usec=0, end_time_usec=0, callback_ext="{}",
    )  # fmt: skip
    return record_body(**{**fields, **extra})


def post(client: FlaskClient, body: dict) -> None:  # type: ignore[type-arg]
    assert client.post("/v1/callbacks/tencent", json=body).status_code == 200


def broadcasts(ctx: pipeline.Context) -> list[Broadcast]:
    with ctx.sessions() as session:
        query = select(Broadcast).where(Broadcast.status != "merged").order_by(Broadcast.started_at)
        rows = list(session.execute(query).scalars())
        for row in rows:
            _ = row.archives, row.fragments
        return rows


def handle_events(ctx: pipeline.Context) -> None:
    """What the sweep does for events a broker lost: handle everything stored."""
    ctx.clock.now += 10  # type: ignore[attr-defined]  # past the sweep's grace for fresh events
    for event_id in pipeline.sweep(ctx).events:
        pipeline.handle_event(ctx, event_id)


def make_ctx(settings: Settings, **overrides: object) -> pipeline.Context:
    ctx = pipeline.Context.build(settings.model_copy(update=overrides))
    ctx.clock = Clock()
    return ctx


def test_gap_beyond_the_window_splits_and_a_late_bridge_makes_version_2(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    ctx = make_ctx(settings, reconnect_window=5.0)
    post(client, fragment(media_url, media_dir, 0, START))
    post(client, fragment(media_url, media_dir, 1, START + 36))  # 30 s after the first ends
    assert run_until_quiet(ctx, ctx.clock) == ["archived", "archived"]  # type: ignore[arg-type]
    first, second = broadcasts(ctx)
    old_archives = [ctx.store.local_path(b.archives[0].key) for b in (first, second)]

    post(
        client, record_body(**{**fragment(media_url, media_dir, 2, START + 6), "end_time": START + 36, "duration": 30})
    )
    handle_events(ctx)
    (merged,) = broadcasts(ctx)
    assert merged.status == "settling" and merged.version == 1 and len(merged.fragments) == 3
    assert all(p is not None and p.exists() for p in old_archives)  # version 1 stays readable meanwhile

    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    (final,) = broadcasts(ctx)
    assert final.version == 2 and [a.version for a in final.archives] == [1, 2]
    assert all(p.exists() for p in old_archives)  # type: ignore[union-attr]


def test_a_live_push_keeps_its_broadcast_open_until_the_push_stops(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    ctx = make_ctx(settings)
    start = sample("css-push-start.json")
    post(client, signed({**start, "stream_id": "lesson", "event_time": START - 5}))
    post(client, fragment(media_url, media_dir, 0, START))
    assert run_until_quiet(ctx, ctx.clock) == []  # type: ignore[arg-type]
    assert broadcasts(ctx)[0].status == "open"

    stop = sample("css-push-stop.json")
    post(client, signed({**stop, "stream_id": "lesson", "event_time": START + 7}))
    handle_events(ctx)
    assert broadcasts(ctx)[0].status == "settling"
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]


def test_a_stop_of_an_older_push_session_does_not_close_the_current_one(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    ctx = make_ctx(settings)
    post(client, signed({**sample("css-push-start.json"), "stream_id": "lesson", "sequence": "new"}))
    post(client, signed({**sample("css-push-stop.json"), "stream_id": "lesson", "sequence": "old"}))
    post(client, fragment(media_url, media_dir, 0, START))
    assert run_until_quiet(ctx, ctx.clock) == []  # type: ignore[arg-type]
    assert broadcasts(ctx)[0].status == "open"


def test_declared_window_holds_its_fragments_whatever_the_gaps(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    ctx = make_ctx(settings, reconnect_window=5.0)
    for n, offset in enumerate((0, 600, 1200)):  # ten minutes apart
        post(client, fragment(media_url, media_dir, n, START + offset))
    post(client, fragment(media_url, media_dir, 3, START + 3000))  # after the class
    handle_events(ctx)  # grouped first: four broadcasts
    assert len(broadcasts(ctx)) == 4
    declared = client.post(
        "/v1/broadcasts",
        json={"stream_id": "lesson", "start": "2026-09-21T14:13:00Z", "end": START + 1800},
        headers=auth(),
    )
    assert declared.status_code == 201 and declared.get_json()["declared"] is True
    assert run_until_quiet(ctx, ctx.clock)  # type: ignore[arg-type]
    shown = client.get(f"/v1/broadcasts/{declared.get_json()['id']}", headers=auth()).get_json()
    assert [f["source_key"] for f in shown["fragments"]] == ["tencent:lesson-0", "tencent:lesson-1", "tencent:lesson-2"]
    assert shown["status"] == "archived" and shown["archive"]["duration"] == pytest.approx(18, abs=1)
    others = [b for b in broadcasts(ctx) if b.id != shown["id"]]
    assert all(len(b.fragments) == 1 for b in others)


def test_same_recording_session_joins_across_a_long_gap(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    ctx = make_ctx(settings, reconnect_window=5.0)
    ext = json.dumps({"session_id": "77"})
    post(client, fragment(media_url, media_dir, 0, START, callback_ext=ext))
    post(client, fragment(media_url, media_dir, 1, START + 900, callback_ext=ext))
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]


def test_overlapping_fragments_are_trimmed_so_no_second_plays_twice(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    ctx = make_ctx(settings)
    post(client, fragment(media_url, media_dir, 0, START))
    post(client, fragment(media_url, media_dir, 1, START + 4))  # 2 s recorded twice
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    (broadcast,) = broadcasts(ctx)
    manifest = json.loads(ctx.store.local_path(broadcast.archives[0].manifest_key).read_text())  # type: ignore[union-attr]
    assert [f["trimmed"] for f in manifest["fragments"]] == pytest.approx([0, 2], abs=0.05)
    assert broadcast.archives[0].duration == pytest.approx(10, abs=0.3)


@pytest.fixture(scope="module")
def truncated(media_dir: Path) -> str:
    whole = (media_dir / "clip1.mp4").read_bytes()
    name = "truncated.mp4"
    (media_dir / name).write_bytes(whole[: len(whole) // 2])
    return name


def test_a_truncated_fragment_fails_its_broadcast_naming_it(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path, truncated: str
) -> None:
    ctx = make_ctx(settings)
    post(client, fragment(media_url, media_dir, 0, START))
    size = (media_dir / truncated).stat().st_size
    post(
        client,
        {**fragment(media_url, media_dir, 1, START + 8), "video_url": f"{media_url}/{truncated}", "file_size": size},
    )
    assert run_until_quiet(ctx, ctx.clock) == ["failed"]  # type: ignore[arg-type]
    (broadcast,) = broadcasts(ctx)
    assert "tencent:lesson-1" in (broadcast.error or "") and broadcast.archives == []
    listed = client.get(f"/v1/broadcasts/{broadcast.id}", headers=auth()).get_json()
    assert listed["fragments"][1]["error"] and listed["fragments"][0]["error"] is None


def test_a_size_that_differs_from_file_size_fails_naming_the_fragment(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    ctx = make_ctx(settings)
    post(client, {**fragment(media_url, media_dir, 0, START), "file_size": 12345})
    assert run_until_quiet(ctx, ctx.clock) == ["failed"]  # type: ignore[arg-type]
    error = broadcasts(ctx)[0].error or ""
    assert "tencent:lesson-0" in error and "12345" in error


def test_skip_policy_archives_the_rest_and_records_the_hole(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path, truncated: str
) -> None:
    ctx = make_ctx(settings, broken_fragments="skip")
    post(client, fragment(media_url, media_dir, 0, START))
    size = (media_dir / truncated).stat().st_size
    post(
        client,
        {**fragment(media_url, media_dir, 1, START + 8), "video_url": f"{media_url}/{truncated}", "file_size": size},
    )
    post(client, fragment(media_url, media_dir, 2, START + 16))
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    (broadcast,) = broadcasts(ctx)
    archive = broadcast.archives[0]
    assert stitch.probe(ctx.store.local_path(archive.key)).duration == pytest.approx(12, abs=0.5)  # type: ignore[arg-type]
    manifest = json.loads(ctx.store.local_path(archive.manifest_key).read_text())  # type: ignore[union-attr]
    assert manifest["fragments"][1]["join"].startswith("left out: fragment")


def test_a_stream_recorded_in_two_formats_gets_one_archive_per_format(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path, flv_copy: str
) -> None:
    ctx = make_ctx(settings)
    post(client, fragment(media_url, media_dir, 0, START))
    size = (media_dir / flv_copy).stat().st_size
    flv = fragment(media_url, media_dir, 1, START, file_format="flv", video_url=f"{media_url}/{flv_copy}")
    post(client, {**flv, "file_size": size})
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    (broadcast,) = broadcasts(ctx)
    assert broadcast.format == "flv,mp4"
    keys = sorted(a.key.rsplit("/", 1)[1] for a in broadcast.archives)
    assert keys == [f"{broadcast.id}-v1.flv.mp4", f"{broadcast.id}-v1.mp4"]
    shown = client.get(f"/v1/broadcasts/{broadcast.id}", headers=auth()).get_json()
    assert shown["archive"]["format"] == "mp4" and len(shown["archives"]) == 2


@pytest.fixture(scope="module")
def flv_copy(media_dir: Path) -> str:
    name = "clip0-copy.flv"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            str(media_dir / "clip0.mp4"),
            "-c",
            "copy",
            str(media_dir / name),
        ],
        check=True,
    )
    return name


def test_a_stop_handled_before_its_start_does_not_leave_the_stream_live(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    ctx = make_ctx(settings)
    post(client, signed({**sample("css-push-stop.json"), "stream_id": "lesson", "event_time": START + 7}))
    handle_events(ctx)  # the stop first, as two busy workers may do
    post(client, signed({**sample("css-push-start.json"), "stream_id": "lesson", "event_time": START - 5}))
    post(client, fragment(media_url, media_dir, 0, START))
    handle_events(ctx)
    assert broadcasts(ctx)[0].status == "settling"
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]


def test_a_broadcast_merged_away_while_it_is_stitched_loses_its_lease(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late fragment bridges an archived broadcast and one being stitched: that stitch stops, and
    the archived one (the higher version) goes on with all three fragments as version 2."""
    ctx = make_ctx(settings)
    post(client, fragment(media_url, media_dir, 0, START))
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    post(client, fragment(media_url, media_dir, 1, START + 400))  # beyond the 300 s window
    produce = pipeline._produce_archives

    def bridged_meanwhile(*args: object) -> object:
        post(client, fragment(media_url, media_dir, 2, START + 200))
        handle_events(ctx)
        return produce(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "_produce_archives", bridged_meanwhile)
    assert run_until_quiet(ctx, ctx.clock) == ["lost-lease"]  # type: ignore[arg-type]
    monkeypatch.undo()
    (merged,) = broadcasts(ctx)
    assert merged.status == "settling" and merged.version == 1 and len(merged.fragments) == 3
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    (final,) = broadcasts(ctx)
    assert final.status == "archived" and final.version == 2
