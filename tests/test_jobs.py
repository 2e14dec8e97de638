"""Batch jobs and imports: parsing, dry runs, idempotent submission, real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from recorder import pipeline
from recorder.config import Settings
from recorder.errors import BadRequest
from recorder.imports import parse_fragments
from tests.factories import READER, auth, fragment_body, record_body

START = 1_790_000_000  # 2026-09-21T14:13:20Z


def own_csv(media_url: str, media_dir: Path, streams: int = 5, per_stream: int = 10) -> str:
    """Fragments of 6 s, 2 s apart, per stream; the streams an hour apart."""
    lines = ["stream_id,file_format,start_time,end_time,video_url,file_size,file_id"]
    for s in range(streams):
        for i in range(per_stream):
            clip = f"clip{i % 3}.mp4"
            begin = START + 3600 * s + 8 * i
            size = (media_dir / clip).stat().st_size
            lines.append(f"class_{s},mp4,{begin},{begin + 6},{media_url}/{clip},{size},f{s}-{i}")
    return "\n".join(lines)


def test_csv_that_the_csv_module_refuses_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match=r"line 2: not valid CSV: field larger than field limit"):
        parse_fragments("stream_id,video_url\nx," + "a" * 200_000 + "\n", "csv")
    # A lone carriage return ends a row: not a server error, a row without its columns.
    with pytest.raises(BadRequest, match="line 2: expected either the columns"):
        parse_fragments("stream_id,note\ns1\r2,3\n", "csv")


def test_own_csv_columns_with_unix_or_iso_times() -> None:
    data = (
        "stream_id,file_format,start_time,end_time,video_url,file_size\n"
        "s1,MP4,1790000000,1790000006,http://x.myqcloud.com/a.mp4,100\n"
        "s1,flv,2026-09-21T14:13:28Z,2026-09-21T14:13:34Z,http://x.myqcloud.com/b.flv,\n"
    )
    first, second = parse_fragments(data, "csv")
    assert (first.stream_id, first.format, first.start, first.file_size) == ("s1", "mp4", START, 100)
    assert (second.format, second.start, second.file_size, second.app) == ("flv", START + 8, None, "import")
    assert first.source_key != second.source_key


def test_vod_console_file_list() -> None:
    data = (
        "FileName,FileId,Duration,Size,CreateTime,URL\n"
        "class_9_2026-09-21-22-13-20_2026-09-21-22-43-20,5285890800000001,1800,1048576,2026-09-21 22:48:00,"
        "http://1250000001.vod2.myqcloud.com/aa/bb/f0.mp4\n"
    )
    (fragment,) = parse_fragments(data, "csv")  # names are in the console's zone, +08:00 by default
    assert (fragment.stream_id, fragment.start, fragment.end) == ("class_9", START, START + 1800)
    assert (fragment.source_key, fragment.file_size, fragment.format) == ("tencent:5285890800000001", 1048576, "mp4")
    (utc,) = parse_fragments(data, "csv", tz_offset="+00:00")
    assert utc.start == START + 8 * 3600


def test_jsonl_of_callback_bodies() -> None:
    lines = [
        json.dumps(record_body(file_id=f"j{i}", start_time=START + 8 * i, end_time=START + 8 * i + 6)) for i in range(3)
    ]
    fragments = parse_fragments("\n".join(lines) + "\n\n", "jsonl")
    assert [f.source_key for f in fragments] == ["tencent:j0", "tencent:j1", "tencent:j2"]


@pytest.mark.parametrize(
    "data, fmt, reason",
    [
        ("{not json", "jsonl", "line 1: not valid JSON"),
        ("[1]", "jsonl", "line 1: expected a JSON object"),
        ('{"stream_id": "s"}', "jsonl", "line 1: file_format"),
        ("a,b\n1,2\n", "csv", "line 2: expected either the columns"),
        ("", "csv", "no header"),
        (
            "stream_id,file_format,start_time,end_time,video_url\ns,mp4,soon,1,http://h/a.mp4\n",
            "csv",
            "line 2: start_time",
        ),
        (
            "stream_id,file_format,start_time,end_time,video_url\ns,mkv,1,2,http://h/a.mkv\n",
            "csv",
            "line 2: file_format",
        ),
        ("stream_id,file_format,start_time,end_time,video_url\ns,mp4,1,2,file:///etc/passwd\n", "csv", "video_url"),
        ("x", "xml", "format"),
    ],
)
def test_bad_imports_name_the_line(data: str, fmt: str, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_fragments(data, fmt)
    assert reason in caught.value.reason


def test_dry_run_import_proposes_broadcasts_and_is_idempotent(
    client: FlaskClient, media_url: str, media_dir: Path
) -> None:
    body = {"kind": "import", "format": "csv", "data": own_csv(media_url, media_dir), "dry_run": True}
    first = client.post("/v1/jobs", json=body, headers=auth())
    assert first.status_code == 202, first.get_json()
    job = first.get_json()
    assert job["status"] == "done" and job["dry_run"] is True and job["progress"]["total"] == 5
    proposal = job["broadcasts"][0]
    assert len(proposal["fragments"]) == 10 and len(proposal["gaps"]) == 9
    assert proposal["expected_duration"] == 60 and all(f["new"] for f in proposal["fragments"])
    again = client.post("/v1/jobs", json=body, headers=auth())
    assert again.status_code == 200 and again.get_json()["id"] == job["id"]
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth(READER)).get_json() == again.get_json()
    assert client.get("/v1/jobs", headers=auth(READER)).get_json()["items"][0]["id"] == job["id"]


def test_a_dry_run_keeps_the_fragments_of_a_declared_window_together(client: FlaskClient) -> None:
    """Two fragments farther apart than the reconnect window, inside a window the app declared:
    the dry run proposes the one broadcast that grouping makes of them."""
    for n, offset in enumerate((0, 400)):
        assert client.post("/v1/callbacks/tencent", json=fragment_body("w", f"w{n}", START + offset)).status_code == 200
    window = {"stream_id": "w", "start": START, "end": START + 500}
    assert client.post("/v1/broadcasts", json=window, headers=auth()).status_code == 201
    body = {"kind": "stitch", "stream_ids": ["w"], "since": START - 10, "until": START + 1000, "dry_run": True}
    job = client.post("/v1/jobs", json=body, headers=auth()).get_json()
    assert [len(proposed["fragments"]) for proposed in job["broadcasts"]] == [2]


@pytest.mark.parametrize(
    "body, status, reason",
    [
        ({"kind": "nope"}, 400, "kind"),
        ({"kind": "stitch", "since": 1, "until": 2}, 400, "exactly one of stream_ids and stream_prefix"),
        ({"kind": "stitch", "stream_ids": ["a"], "since": 5, "until": 2}, 400, "until must be after since"),
        ({"kind": "stitch", "stream_ids": ["a"], "since": "then", "until": 2}, 400, "since"),
        ({"kind": "import", "format": "csv", "data": "a,b\n1,2", "dry_run": True}, 400, "line 2"),
        ({"kind": "import", "format": "csv", "data": "x", "extra": 1}, 400, "extra"),
    ],
)
def test_bad_job_requests_are_400(client: FlaskClient, body: dict, status: int, reason: str) -> None:  # type: ignore[type-arg]
    answer = client.post("/v1/jobs", json=body, headers=auth())
    assert answer.status_code == status and reason in answer.get_json()["error"]


def test_jobs_need_an_admin_token_to_submit(client: FlaskClient) -> None:
    body = {"kind": "stitch", "stream_ids": ["a"], "since": 1, "until": 2}
    assert client.post("/v1/jobs", json=body, headers=auth(READER)).status_code == 403
    assert client.post("/v1/jobs", json=body).status_code == 401
    assert client.get("/v1/jobs/jnope", headers=auth()).status_code == 404


def test_import_runs_once_and_archives_every_broadcast(
    client: FlaskClient, settings: Settings, media_url: str, media_dir: Path
) -> None:
    body = {"kind": "import", "format": "csv", "data": own_csv(media_url, media_dir, streams=2, per_stream=3)}
    job = client.post("/v1/jobs", json=body, headers=auth()).get_json()
    assert job["status"] == "queued"
    ctx = pipeline.Context.build(settings)
    broadcast_ids = pipeline.run_job(ctx, job["id"])
    assert len(broadcast_ids) == 2
    assert pipeline.run_job(ctx, job["id"]) == []  # a redelivered task does nothing
    running = client.get(f"/v1/jobs/{job['id']}", headers=auth()).get_json()
    assert running["status"] == "running" and running["progress"] == {"total": 2, "done": 0, "failed": 0, "bytes": 0}
    assert [pipeline.stitch_broadcast(ctx, b) for b in broadcast_ids] == ["archived", "archived"]
    done = client.get(f"/v1/jobs/{job['id']}", headers=auth()).get_json()
    assert done["status"] == "done" and done["progress"]["done"] == 2 and done["progress"]["bytes"] > 0
    assert client.post("/v1/jobs", json=body, headers=auth()).status_code == 200  # same inputs: same job

    # A stitch job over the same range re-stitches: version 2.
    stitch = {"kind": "stitch", "stream_prefix": "class_", "since": START - 10, "until": START + 7200}
    rerun = client.post("/v1/jobs", json=stitch, headers=auth()).get_json()
    assert sorted(pipeline.run_job(ctx, rerun["id"])) == sorted(broadcast_ids)
    assert [pipeline.stitch_broadcast(ctx, b) for b in broadcast_ids] == ["archived", "archived"]
    final = client.get(f"/v1/jobs/{rerun['id']}", headers=auth()).get_json()
    assert final["status"] == "done" and {b["version"] for b in final["broadcasts"]} == {2}


VOD_HEADER = "FileName,URL\n"
VOD_NAME = "class_9_2026-09-21-22-13-20_2026-09-21-22-43-20"


@pytest.mark.parametrize(
    "data, fmt, tz_offset, reason",
    [
        (VOD_HEADER + f"{VOD_NAME},http://x.myqcloud.com/a.mp4\n", "csv", "+99:00", "timezone: expected an offset"),
        (VOD_HEADER + f"{VOD_NAME},http://x.myqcloud.com/a.mp4\n", "csv", "+08:75", "timezone: expected an offset"),
        (
            VOD_HEADER + "x_2026-13-01-00-00-00_2026-13-01-00-10-00.mp4,http://x.myqcloud.com/a.mp4\n",
            "csv",
            "+08:00",
            "line 2: x_2026-13-01-00-00-00_2026-13-01-00-10-00.mp4: its times are not real dates",
        ),
        ("[" * 100_000 + "]" * 100_000, "jsonl", "+08:00", "line 1: not valid JSON"),
        (
            json.dumps(record_body(stream_id="a\x01b")),
            "jsonl",
            "+08:00",
            "line 1: stream_id: must be printable text",
        ),
    ],
)
def test_more_bad_imports_name_what_is_wrong(data: str, fmt: str, tz_offset: str, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_fragments(data, fmt, tz_offset=tz_offset)
    assert caught.value.reason.startswith(reason), caught.value.reason


def test_vod_file_name_is_found_whatever_the_column_order() -> None:
    url = f"http://x.myqcloud.com/rec/{VOD_NAME}.mp4"  # the URL's path ends in the same name
    (fragment,) = parse_fragments(f"URL,File name\n{url},{VOD_NAME}.mp4\n", "csv")
    assert (fragment.stream_id, fragment.start, fragment.url) == ("class_9", START, url)


def test_jsonl_strings_may_hold_unicode_line_separators() -> None:
    (fragment,) = parse_fragments(json.dumps(record_body(stream_param="a\u2028b\u0085c"), ensure_ascii=False), "jsonl")
    assert fragment.source_key.startswith("tencent:")


def test_one_list_saved_or_sent_another_way_is_one_job(client: FlaskClient) -> None:
    rows = [
        "stream_id,file_format,start_time,end_time,video_url",
        "s,mp4,1790000000,1790000006,http://x.myqcloud.com/a",
    ]
    ways = [
        {"data": "\n".join(rows) + "\n", "timezone": "+08:00"},
        {"data": "\ufeff" + "\r\n".join(rows) + "\r\n", "timezone": "+0800"},
        {"data": "\r".join(rows) + "\r", "timezone": "+08:00"},
    ]
    ids = {
        client.post(
            "/v1/jobs", json={"kind": "import", "format": "csv", "dry_run": True, **way}, headers=auth()
        ).get_json()["id"]
        for way in ways
    }
    jsonl = json.dumps(record_body())
    ids_jsonl = {
        client.post(
            "/v1/jobs", json={"kind": "import", "format": "jsonl", "data": jsonl, "timezone": zone, "dry_run": True},
            headers=auth(),
        ).get_json()["id"]
        for zone in ("+08:00", "-05:00")  # callback bodies carry their own times
    }  # fmt: skip
    assert len(ids) == 1 and len(ids_jsonl) == 1


def test_the_same_job_submitted_at_the_same_moment_is_one_job(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.orm import Session

    body = {"kind": "stitch", "stream_ids": ["a"], "since": 1, "until": 2, "dry_run": True}
    first = client.post("/v1/jobs", json=body, headers=auth())
    # The second request looked before the first committed: it saw no job and inserts one too.
    real_get, looked = Session.get, []

    def get(self: Session, entity: type, *args: object, **kwargs: object) -> object:
        if entity.__name__ == "Job" and not looked:
            looked.append(entity)
            return None
        return real_get(self, entity, *args, **kwargs)

    monkeypatch.setattr(Session, "get", get)
    second = client.post("/v1/jobs", json=body, headers=auth())
    assert (first.status_code, second.status_code) == (202, 200), second.get_json()
    assert second.get_json()["id"] == first.get_json()["id"]


@pytest.mark.parametrize(
    "selector, reason",
    [
        ({"stream_ids": ["a\x00"]}, "stream_ids.0: must be printable"),
        ({"stream_ids": ["a" * 1025]}, "stream_ids.0"),
        ({"stream_prefix": "a\x00"}, "stream_prefix: must be printable"),
    ],
)
def test_stitch_job_stream_ids_are_checked(client: FlaskClient, selector: dict, reason: str) -> None:  # type: ignore[type-arg]
    body = {"kind": "stitch", **selector, "since": 1, "until": 2, "dry_run": True}
    answer = client.post("/v1/jobs", json=body, headers=auth())
    assert answer.status_code == 400 and reason in answer.get_json()["error"], answer.get_json()


def test_a_job_body_nested_too_deep_is_400(client: FlaskClient) -> None:
    answer = client.post(
        "/v1/jobs", data="[" * 100_000 + "]" * 100_000, content_type="application/json", headers=auth()
    )
    assert answer.status_code == 400 and "body must be a JSON object" in answer.get_json()["error"]
