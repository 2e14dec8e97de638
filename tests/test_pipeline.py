"""The worker's steps in-process: handle, settle, lease, fetch, stitch, archive."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from recorder import fetch, pipeline, prefetched, stitch
from recorder.archive import sha256_file
from recorder.config import Settings
from recorder.demo import free_port
from recorder.samples import make_clip
from recorder.store import repository
from recorder.store.db import transaction
from recorder.store.models import Archive, Broadcast, Event, Fragment
from tests.factories import auth, record_body


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def send_fragments(
    client: FlaskClient,
    media_url: str,
    media_dir: Path,
    *,
    stream_id: str,
    gap: float = 2,
    start: float | None = None,
    clips: range = range(3),
    copies: int = 2,
    names: list[str] | None = None,
    fmt: str = "mp4",
) -> None:
    """Signed callbacks for 6 s clips (``names`` in ``media_dir``, by default clip0.mp4, ...)
    with ``gap`` seconds between them, shuffled."""
    start = time.time() - 60 if start is None else start
    names = names or [f"clip{i}.mp4" for i in clips]
    bodies = [
        record_body(
            stream_id=stream_id,
            channel_id=stream_id,
            file_id=f"{stream_id}-{i}",
            record_file_id=f"{stream_id}-{i}",
            file_format=fmt,
            video_url=f"{media_url}/{name}",
            file_size=None if fmt == "hls" else (media_dir / name).stat().st_size,  # a playlist's is not known
            start_time=int(start + i * (6 + gap)),
            end_time=int(start + i * (6 + gap) + 6),
            duration=6,
            start_time_usec=0,
            end_time_usec=0,
        )
        for i, name in enumerate(names)
    ] * copies
    random.shuffle(bodies)
    for body in bodies:
        assert client.post("/v1/callbacks/tencent", json=body).status_code == 200


def run_until_quiet(ctx: pipeline.Context, clock: Clock) -> list[str]:
    """What the beat would do: handle events, settle, stitch what is due."""
    clock.now += ctx.settings.settle_seconds + 60
    first = pipeline.sweep(ctx)
    for event_id in first.events:
        pipeline.handle_event(ctx, event_id)
    due = first.stitches + pipeline.sweep(ctx).stitches
    return [pipeline.stitch_broadcast(ctx, broadcast_id) for broadcast_id in due]


@pytest.fixture
def ctx(settings: Settings, client: FlaskClient) -> pipeline.Context:
    context = pipeline.Context.build(settings)
    context.clock = Clock()
    return context


def test_three_fragments_shuffled_twice_make_one_verified_archive(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    send_fragments(client, media_url, media_dir, stream_id="class_math_01")
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]

    listed = client.get("/v1/broadcasts", query_string={"stream_id": "class_math_01"}, headers=auth()).get_json()
    assert len(listed["items"]) == 1 and listed["next_cursor"] is None
    broadcast = listed["items"][0]
    assert broadcast["status"] == "archived" and broadcast["version"] == 1
    assert len(broadcast["fragments"]) == 3
    assert [g["seconds"] for g in broadcast["gaps"]] == [2.0, 2.0]
    archive = broadcast["archive"]
    path = ctx.store.local_path(archive["key"])
    assert path is not None and path.stat().st_size == archive["size"]
    assert archive["key"].startswith("push.example.com/class_math_01/") and archive["key"].endswith("-v1.mp4")
    facts = stitch.probe(path)
    assert facts.duration == pytest.approx(18, abs=1)
    assert facts.video and facts.audio
    manifest = json.loads(ctx.store.local_path(archive["manifest_key"]).read_text())  # type: ignore[union-attr]
    assert [f["offset"] for f in manifest["fragments"]] == pytest.approx([0, 6, 12], abs=0.2)
    assert len(manifest["gaps"]) == 2 and manifest["ffmpeg"]["mode"] == "copy"
    assert all(len(f["sha256"]) == 64 and f["probe"]["video"] for f in manifest["fragments"])

    # Idempotent: nothing more to do, and a second stitch task is a no-op.
    assert run_until_quiet(ctx, ctx.clock) == []  # type: ignore[arg-type]
    assert pipeline.stitch_broadcast(ctx, broadcast["id"]) == "skipped"


def test_events_are_handled_once_and_the_sweep_finds_unhandled_ones(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    send_fragments(client, media_url, media_dir, stream_id="s", clips=range(1), copies=1)
    ctx.clock.now += 10  # type: ignore[attr-defined]
    work = pipeline.sweep(ctx)
    assert len(work.events) == 1
    assert pipeline.handle_event(ctx, work.events[0]) is True
    assert pipeline.handle_event(ctx, work.events[0]) is False
    assert pipeline.sweep(ctx).events == []


def test_the_sweep_sends_an_unhandled_event_again_only_every_few_minutes_oldest_news_first(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    send_fragments(client, media_url, media_dir, stream_id="s", clips=range(3), copies=1)
    ctx.clock.now += 10  # type: ignore[attr-defined]
    first = pipeline.sweep(ctx).events
    assert len(first) == 3
    ctx.clock.now += 60  # type: ignore[attr-defined]
    assert pipeline.sweep(ctx).events == []  # sent a minute ago: not piled into the queue again
    ctx.clock.now += repository.RESEND_SECONDS  # type: ignore[attr-defined]
    send_fragments(client, media_url, media_dir, stream_id="t", clips=range(1), copies=1)
    again = pipeline.sweep(ctx).events
    # The one never sent comes before those sent already (which may keep failing).
    assert len(again) == 4 and again[0] not in first and sorted(again[1:]) == sorted(first)


def settled_broadcast(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path, stream_id: str, start: float
) -> str:
    """One fragment (clip0) sent at ``start``, grouped and settled: its broadcast, due for stitching."""
    send_fragments(client, media_url, media_dir, stream_id=stream_id, start=start, clips=range(1), copies=1)
    ctx.clock.now += 700  # type: ignore[attr-defined]
    for event_id in pipeline.sweep(ctx).events:
        pipeline.handle_event(ctx, event_id)
    (broadcast_id,) = pipeline.sweep(ctx).stitches
    return broadcast_id


def test_a_held_lease_stops_a_second_worker(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    broadcast_id = settled_broadcast(client, ctx, media_url, media_dir, "s", time.time() - 60)
    with transaction(ctx.sessions) as session:
        assert repository.acquire_lease(session, broadcast_id, owner="other", lease=300, now=ctx.clock()) is not None
    assert pipeline.stitch_broadcast(ctx, broadcast_id) == "skipped"


@pytest.mark.parametrize("stall", ["before storing", "while uploading"])
def test_a_worker_whose_lease_ran_out_leaves_the_next_holders_archive_alone(
    client: FlaskClient,
    ctx: pipeline.Context,
    settings: Settings,
    media_url: str,
    media_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    stall: str,
) -> None:
    """Worker 1 stalls past its lease; worker 2 stitches the broadcast with a fragment that came
    meanwhile and records version 1. Worker 1 stops as lost-lease and writes nothing over it:
    stalled before storing, on another machine, the check before each put stops it; stalled in
    an upload, on the same machine, so does its scratch, which worker 2 cleared."""
    start = time.time() - 60
    broadcast_id = settled_broadcast(client, ctx, media_url, media_dir, "stale", start)
    elsewhere = {"work_dir": settings.work_dir.with_name("other-machine")} if stall == "before storing" else {}
    other = pipeline.Context.build(settings.model_copy(update=elsewhere), owner="other")
    other.clock = ctx.clock
    target, name = (pipeline, "verify_stitched") if stall == "before storing" else (ctx.store, "put_file")
    step = getattr(target, name)

    def taken_over_meanwhile(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(target, name, step)
        send_fragments(client, media_url, media_dir, stream_id="stale", start=start, clips=range(2), copies=1)
        grouped_events(ctx)
        ctx.clock.now += ctx.settings.lease_seconds + 1  # type: ignore[attr-defined]
        assert pipeline.stitch_broadcast(other, broadcast_id) == "archived"
        return step(*args, **kwargs)

    monkeypatch.setattr(target, name, taken_over_meanwhile)
    assert pipeline.stitch_broadcast(ctx, broadcast_id) == "lost-lease"
    with ctx.sessions() as session:
        archive = session.execute(select(Archive)).scalar_one()
    assert archive.duration == pytest.approx(12, abs=0.5)  # both fragments: worker 2's
    assert sha256_file(ctx.store.local_path(archive.key)) == (archive.size, archive.sha256)  # type: ignore[arg-type]


def test_a_renewal_that_finds_the_lease_gone_stops_the_stitch_at_its_next_step(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"lease_seconds": 0.3})  # renewed every 0.1 s
    broadcast_id = settled_broadcast(client, ctx, media_url, media_dir, "taken", time.time() - 60)
    produce = pipeline._produce_archives

    def taken_meanwhile(*args: Any) -> Any:
        ctx.clock.now += 1  # type: ignore[attr-defined]  # the lease ran out, and another worker took it
        with transaction(ctx.sessions) as session:
            assert repository.acquire_lease(session, broadcast_id, owner="other", lease=300, now=ctx.clock())
        assert args[-1].lost.wait(10)  # the lease, as its renewal found it
        return produce(*args)

    monkeypatch.setattr(pipeline, "_produce_archives", taken_meanwhile)
    monkeypatch.setattr(stitch, "stitch", lambda *args, **kwargs: pytest.fail("stitched after losing the lease"))
    assert pipeline.stitch_broadcast(ctx, broadcast_id) == "lost-lease"


def test_host_outside_allowlist_fails_the_broadcast_with_a_reason(client: FlaskClient, ctx: pipeline.Context) -> None:
    body = record_body(stream_id="evil", video_url="http://evil.example/a.mp4")
    assert client.post("/v1/callbacks/tencent", json=body).status_code == 200  # stored, never fetched
    assert run_until_quiet(ctx, ctx.clock) == ["failed"]  # type: ignore[arg-type]
    with ctx.sessions() as session:
        broadcast = session.execute(select(Broadcast)).scalar_one()
        assert broadcast.status == "failed"
        assert "evil.example" in (broadcast.error or "") and "RECORDER_MEDIA_HOSTS" in (broadcast.error or "")
        assert session.execute(select(Event)).scalar_one().handled_at is not None


def test_unreachable_media_is_retried_with_backoff_then_failed(client: FlaskClient, ctx: pipeline.Context) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused, for real
    ctx.allow = fetch.HostAllowlist((*ctx.settings.media_hosts, closed))
    assert client.post("/v1/callbacks/tencent", json=record_body(video_url=f"http://{closed}/a.mp4")).status_code == 200
    assert run_until_quiet(ctx, ctx.clock) == ["stitching"]  # type: ignore[arg-type]
    with ctx.sessions() as session:
        broadcast = session.execute(select(Broadcast)).scalar_one()
        assert broadcast.status == "stitching" and broadcast.error.startswith("retrying")  # type: ignore[union-attr]
        assert broadcast.next_attempt_at > ctx.clock()  # type: ignore[operator]
    # Retries continue until the retry window has passed, then the broadcast fails.
    outcomes = []
    for _ in range(12):
        ctx.clock.now += ctx.settings.retry_seconds / 4 + 1  # type: ignore[attr-defined]
        outcomes += [pipeline.stitch_broadcast(ctx, b) for b in pipeline.sweep(ctx).stitches]
    assert outcomes[-1] == "failed" and outcomes.count("failed") == 1
    assert set(outcomes[:-1]) == {"stitching"}


def test_scratch_of_killed_processes_is_cleared_and_live_work_is_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan, working, earlier = (tmp_path / name for name in (f"bx-{dead.pid}-a", f"by-{os.getpid()}-b", "bz-1-c"))
    for path in (orphan, working, earlier):
        path.mkdir()
        (path / "1.mp4.part").write_bytes(b"partial")
    (tmp_path / "celerybeat-schedule").write_bytes(b"")
    pipeline.clear_scratch(tmp_path, "bz")  # bz's lease is ours: its earlier attempt goes too
    assert sorted(p.name for p in tmp_path.iterdir()) == [working.name, "celerybeat-schedule"]


def test_a_transient_failure_is_sent_again_when_its_backoff_ends(client: FlaskClient, ctx: pipeline.Context) -> None:
    closed = f"127.0.0.1:{free_port()}"
    ctx.allow = fetch.HostAllowlist((*ctx.settings.media_hosts, closed))
    assert client.post("/v1/callbacks/tencent", json=record_body(video_url=f"http://{closed}/a.mp4")).status_code == 200
    assert run_until_quiet(ctx, ctx.clock) == ["stitching"]  # type: ignore[arg-type]
    with ctx.sessions() as session:
        broadcast = session.execute(select(Broadcast)).scalar_one()
    assert broadcast.next_attempt_at < ctx.clock() + ctx.settings.lease_seconds  # type: ignore[operator]
    ctx.clock.now = broadcast.next_attempt_at  # type: ignore[attr-defined]
    assert pipeline.sweep(ctx).stitches == [broadcast.id]  # not held back until a lease's time has passed


# --- prefetch ---------------------------------------------------------------------------------


def own_clips(media_dir: Path, count: int = 2) -> list[Path]:
    """Copies of the session's clips under names of this test's own, so it may take them away."""
    tag = os.urandom(4).hex()
    return [Path(shutil.copy(media_dir / f"clip{i}.mp4", media_dir / f"own-{tag}-{i}.mp4")) for i in range(count)]


def grouped_events(ctx: pipeline.Context) -> list[int]:
    ctx.clock.now += 10  # type: ignore[attr-defined]  # past the sweep's grace for fresh events
    events = pipeline.sweep(ctx).events
    assert all(pipeline.handle_event(ctx, event_id) for event_id in events)
    return events


def own_broadcast(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path, stream_id: str
) -> tuple[list[Path], list[int], list[int]]:
    """Two fragments of clips of the test's own, sent and grouped: the clips, the events, and
    the fragments to prefetch."""
    clips = own_clips(media_dir)
    send_fragments(client, media_url, media_dir, stream_id=stream_id, names=[c.name for c in clips], copies=1)
    events = grouped_events(ctx)
    return clips, events, pipeline.fragments_to_prefetch(ctx, events)


def prefetched_broadcast(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path, stream_id: str
) -> list[int]:
    """own_broadcast's fragments, both prefetched."""
    _, _, fragments = own_broadcast(client, ctx, media_url, media_dir, stream_id)
    assert [pipeline.prefetch(ctx, f) for f in fragments] == ["fetched", "fetched"]
    return fragments


def source_of(ctx: pipeline.Context, media_dir: Path, fragment_id: int) -> Path:
    with ctx.sessions() as session:
        return media_dir / session.get(Fragment, fragment_id).url.rpartition("/")[2]  # type: ignore[union-attr]


def test_prefetched_fragments_are_stitched_without_fetching_them_again(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    clips, events, fragments = own_broadcast(client, ctx, media_url, media_dir, "prefetched")

    assert len(fragments) == 2
    assert [pipeline.prefetch(ctx, f) for f in fragments] == ["fetched", "fetched"]
    assert [pipeline.prefetch(ctx, f) for f in fragments] == ["skipped", "skipped"]  # probed: done
    assert pipeline.fragments_to_prefetch(ctx, events) == []
    for clip in clips:
        clip.unlink()  # gone from the media server: only the prefetched copies are left

    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    assert list((ctx.settings.work_dir / prefetched.FOLDER).iterdir()) == []  # dropped once archived


def test_a_prefetched_file_changed_on_disk_is_fetched_again(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fragments = prefetched_broadcast(client, ctx, media_url, media_dir, "changed")
    (ctx.settings.work_dir / prefetched.FOLDER / f"{fragments[0]}.mp4").write_bytes(b"not what was probed")

    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    assert "the prefetched copy changed on disk; fetching it again" in caplog.text


def test_a_failed_prefetch_leaves_the_fragment_to_the_stitch(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    _, events, fragments = own_broadcast(client, ctx, media_url, media_dir, "later")
    late = source_of(ctx, media_dir, fragments[1])
    content = late.read_bytes()
    late.unlink()  # not there yet

    assert [pipeline.prefetch(ctx, f) for f in fragments] == ["fetched", "failed"]
    assert pipeline.fragments_to_prefetch(ctx, events) == fragments[1:]  # nothing recorded against it
    late.write_bytes(content)
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]


def test_only_fragments_of_broadcasts_not_yet_stitching_are_prefetched(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    send_fragments(client, media_url, media_dir, stream_id="due", copies=1)
    events = grouped_events(ctx)
    fragments = pipeline.fragments_to_prefetch(ctx, events)
    ctx.clock.now += ctx.settings.settle_seconds + 60  # type: ignore[attr-defined]
    assert pipeline.sweep(ctx).stitches  # settled: the stitch fetches them now

    assert pipeline.fragments_to_prefetch(ctx, events) == []
    assert [pipeline.prefetch(ctx, f) for f in fragments] == ["skipped"] * 3


def test_prefetch_off_fetches_nothing_ahead(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"prefetch": False})
    send_fragments(client, media_url, media_dir, stream_id="off", copies=1)
    assert pipeline.fragments_to_prefetch(ctx, grouped_events(ctx)) == []


def test_the_copies_of_a_failed_broadcast_are_dropped(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    fragments = prefetched_broadcast(client, ctx, media_url, media_dir, "doomed")
    copies = ctx.settings.work_dir / prefetched.FOLDER
    (copies / f"{fragments[0]}.mp4").unlink()  # the stitch fetches that one again...
    source_of(ctx, media_dir, fragments[0]).write_bytes(b"not media")  # ...and finds it broken for good

    assert run_until_quiet(ctx, ctx.clock) == ["failed"]  # type: ignore[arg-type]
    assert list(copies.iterdir()) == []


def test_a_sweep_that_gives_up_on_a_broadcast_drops_its_copies(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path
) -> None:
    """A broadcast whose stitches all died (killed workers) fails in the sweep, not in a stitch."""
    fragments = prefetched_broadcast(client, ctx, media_url, media_dir, "killer")
    ctx.clock.now += ctx.settings.settle_seconds + 60  # type: ignore[attr-defined]
    (broadcast_id,) = pipeline.sweep(ctx).stitches
    for _ in range(ctx.settings.max_attempts):  # each stitch dies holding the lease
        with transaction(ctx.sessions) as session:
            assert repository.acquire_lease(session, broadcast_id, owner="dead", lease=60, now=ctx.clock())
        ctx.clock.now += 61  # type: ignore[attr-defined]

    assert pipeline.sweep(ctx).given_up_fragments == fragments
    assert list((ctx.settings.work_dir / prefetched.FOLDER).iterdir()) == []


def test_copies_are_dropped_by_id_and_by_age(tmp_path: Path) -> None:
    copies = prefetched.folder(tmp_path)
    for name in ("1.mp4", "12.flv", "2.mp4", "4.hls/index.m3u8", "5.hls/seg00000.ts"):
        (copies / name).parent.mkdir(exist_ok=True)
        (copies / name).write_bytes(b"x")
    assert prefetched.drop(tmp_path, [1, 12, 4, 99]) == 3
    for old in ("2.mp4", "5.hls"):
        os.utime(copies / old, (time.time() - prefetched.KEPT_FOR - 1,) * 2)
    (copies / "3.mp4").write_bytes(b"x")

    prefetched.drop_stale(tmp_path)
    assert [p.name for p in copies.iterdir()] == ["3.mp4"]


def own_playlists(media_dir: Path, *, encrypted: bool = False) -> list[str]:
    """Two HLS copies of 6 s clips (AES-128 ones if ``encrypted``) in folders of this test's own:
    their playlists' paths in ``media_dir``."""
    tag = os.urandom(4).hex()
    playlists = []
    for i in range(2):
        (folder := media_dir / f"own-{tag}-{i}").mkdir()
        clip = make_clip(folder / "clip.mp4", 6, tone=440 + 220 * i)
        cmd = ["ffmpeg", "-v", "error", "-i", str(clip), "-c", "copy", "-f", "hls", "-hls_time", "2"]
        if encrypted:
            (folder / "k.key").write_bytes(os.urandom(16))
            (folder / "info").write_text(f"k.key\n{folder / 'k.key'}\n")
            cmd += ["-hls_key_info_file", str(folder / "info")]
        subprocess.run([*cmd, str(folder / fetch.HLS_INDEX)], check=True)
        playlists.append(f"{folder.name}/{fetch.HLS_INDEX}")
    return playlists


def prefetched_playlists(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path, stream_id: str, **options: bool
) -> tuple[list[str], list[int]]:
    """A broadcast of two HLS playlists of the test's own (own_playlists' ``options``), both
    prefetched: the playlists and the fragments."""
    playlists = own_playlists(media_dir, **options)
    send_fragments(client, media_url, media_dir, stream_id=stream_id, names=playlists, copies=1, fmt="hls")
    fragments = pipeline.fragments_to_prefetch(ctx, grouped_events(ctx))
    assert [pipeline.prefetch(ctx, f) for f in fragments] == ["fetched", "fetched"]
    return playlists, fragments


def archived_seconds(ctx: pipeline.Context) -> float:
    with ctx.sessions() as session:
        return session.execute(select(Archive)).scalar_one().duration


@pytest.mark.parametrize(("encrypted", "output"), [(False, "remux"), (True, "remux"), (False, "playlist")])
def test_prefetched_hls_playlists_are_stitched_without_fetching_them_again(
    client: FlaskClient, ctx: pipeline.Context, media_url: str, media_dir: Path, encrypted: bool, output: str
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"hls_output": output})
    playlists, fragments = prefetched_playlists(client, ctx, media_url, media_dir, "hls", encrypted=encrypted)
    copies = ctx.settings.work_dir / prefetched.FOLDER
    assert all((copies / f"{f}.hls" / fetch.HLS_INDEX).is_file() for f in fragments)  # a folder per playlist
    for playlist in playlists:
        shutil.rmtree((media_dir / playlist).parent)  # gone from the media server: only the copies are left

    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    assert archived_seconds(ctx) == pytest.approx(12, abs=0.5)
    assert list(copies.iterdir()) == []


@pytest.mark.parametrize("change", ["segment", "durations", "gone"])
def test_a_prefetched_hls_copy_changed_on_disk_is_fetched_again(
    client: FlaskClient,
    ctx: pipeline.Context,
    media_url: str,
    media_dir: Path,
    caplog: pytest.LogCaptureFixture,
    change: str,
) -> None:
    _, fragments = prefetched_playlists(client, ctx, media_url, media_dir, f"hls-{change}")
    copy = ctx.settings.work_dir / prefetched.FOLDER / f"{fragments[0]}.hls"
    index = copy / fetch.HLS_INDEX
    if change == "segment":
        (copy / "seg00001.ts").write_bytes(b"not what was probed")
    elif change == "durations":  # the same files, another timeline
        index.write_text(index.read_text().replace("#EXTINF:2.", "#EXTINF:3."))
    else:
        (copy / "seg00001.ts").unlink()

    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    assert "the prefetched copy changed on disk; fetching it again" in caplog.text
    assert archived_seconds(ctx) == pytest.approx(12, abs=0.5)


@pytest.mark.parametrize("fmt", ["mp4", "hls"])
def test_a_prefetch_stops_short_of_a_full_disk(
    client: FlaskClient,
    ctx: pipeline.Context,
    media_url: str,
    media_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    """An MP4 of known size that does not fit is not fetched; a playlist, whose size nobody
    knows, is fetched until it does not fit, then dropped. Their stitch fetches them."""
    if fmt == "hls":
        names = own_playlists(media_dir)
    else:
        names = [clip.name for clip in own_clips(media_dir)]
    send_fragments(client, media_url, media_dir, stream_id=f"full-{fmt}", names=names, copies=1, fmt=fmt)
    fragments = pipeline.fragments_to_prefetch(ctx, grouped_events(ctx))
    monkeypatch.setattr(prefetched, "room", lambda work_dir: 50_000)  # a full disk cannot be made here

    assert [pipeline.prefetch(ctx, f) for f in fragments] == ["failed" if fmt == "hls" else "no room"] * 2
    assert [p for p in ctx.settings.work_dir.rglob("*") if p.name != prefetched.FOLDER] == []
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]


def test_a_second_copy_of_a_playlist_leaves_the_first_in_place(tmp_path: Path) -> None:
    """Two prefetches of one fragment (a redelivered event): neither fails, one copy stays."""
    for n in (1, 2):
        (fetched := tmp_path / f"scratch-{n}" / "7.hls").mkdir(parents=True)
        (fetched / fetch.HLS_INDEX).write_text(f"copy {n}")
        prefetched.keep(tmp_path, 7, "hls", fetched)
    assert (prefetched.copy_of(tmp_path, 7, "hls") / fetch.HLS_INDEX).read_text() == "copy 1"


def test_a_prefetch_overtaken_by_its_stitch_keeps_no_copy(
    client: FlaskClient,
    ctx: pipeline.Context,
    media_url: str,
    media_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broadcast settles while the prefetch downloads: its stitch fetches the fragment itself
    and may have dropped its copies already, so a copy kept now would stay for a day."""
    send_fragments(client, media_url, media_dir, stream_id="overtaken", clips=range(1), copies=1)
    (fragment,) = pipeline.fragments_to_prefetch(ctx, grouped_events(ctx))
    probe = stitch.probe

    def settle_meanwhile(path: Path, **options: Any) -> stitch.ProbeFacts:
        ctx.clock.now += ctx.settings.settle_seconds + 60  # type: ignore[attr-defined]
        assert pipeline.sweep(ctx).stitches
        return probe(path, **options)

    monkeypatch.setattr(stitch, "probe", settle_meanwhile)
    assert pipeline.prefetch(ctx, fragment) == "fetched"  # the probe is saved: the stitch reuses it
    assert list((ctx.settings.work_dir / prefetched.FOLDER).iterdir()) == []


def test_copies_stay_when_a_fragment_arriving_mid_stitch_calls_for_another_version(
    client: FlaskClient,
    ctx: pipeline.Context,
    media_url: str,
    media_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fragments = prefetched_broadcast(client, ctx, media_url, media_dir, "late")
    produce = pipeline._produce_archives

    def late_fragment_meanwhile(*args: Any) -> list[Any]:
        archives = produce(*args)
        with ctx.sessions() as session:
            end = session.execute(select(Broadcast)).scalar_one().ended_at
        body = record_body(
            stream_id="late",
            file_id="late-next",
            video_url=f"{media_url}/clip2.mp4",
            file_size=(media_dir / "clip2.mp4").stat().st_size,
            start_time=int(end) + 2,
            end_time=int(end) + 8,
            duration=6,
        )
        assert client.post("/v1/callbacks/tencent", json=body).status_code == 200
        grouped_events(ctx)
        return archives

    monkeypatch.setattr(pipeline, "_produce_archives", late_fragment_meanwhile)
    assert run_until_quiet(ctx, ctx.clock) == ["archived"]  # type: ignore[arg-type]
    with ctx.sessions() as session:
        assert session.execute(select(Broadcast)).scalar_one().status == "settling"  # version 2 to come
    kept = sorted(p.name for p in (ctx.settings.work_dir / prefetched.FOLDER).iterdir())
    assert kept == sorted(f"{f}.mp4" for f in fragments)  # for the next stitch
