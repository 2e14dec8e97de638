"""The operator API: auth, filters, pagination, errors, health."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from recorder.app import services
from tests.factories import ADMIN, READER, auth

ENDPOINTS = ["/v1/broadcasts", "/v1/broadcasts/x", "/v1/fragments"]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic YWRtaW4=", f"bearer{ADMIN}", "Bearer "])
def test_operator_endpoints_need_a_valid_token(client: FlaskClient, path: str, header: str | None) -> None:
    answer = client.get(path, headers={"Authorization": header} if header else {})
    assert answer.status_code == 401
    assert answer.get_json()["code"] == 401 and "token" in answer.get_json()["error"]


def test_read_only_token_cannot_act(client: FlaskClient, grouped: None) -> None:
    (broadcast, *_) = client.get("/v1/broadcasts", headers=auth(READER)).get_json()["items"]
    answer = client.post(f"/v1/broadcasts/{broadcast['id']}/stitch", headers=auth(READER))
    assert answer.status_code == 403 and "read-only" in answer.get_json()["error"]
    assert client.post(f"/v1/broadcasts/{broadcast['id']}/stitch", headers=auth()).status_code == 202


def test_list_is_newest_first_with_filters(client: FlaskClient, grouped: None) -> None:
    items = client.get("/v1/broadcasts", headers=auth(READER)).get_json()["items"]
    assert [(b["stream_id"], len(b["fragments"])) for b in items] == [("a", 2), ("c", 1), ("b", 1), ("a", 2)]
    only_a = client.get("/v1/broadcasts?stream_id=a", headers=auth()).get_json()["items"]
    assert len(only_a) == 2 and only_a[0]["started_at"] == "2026-09-21T15:13:20.000Z"
    assert only_a[0]["gaps"] == [
        {"start": "2026-09-21T15:13:26.000Z", "end": "2026-09-21T15:13:28.000Z", "seconds": 2.0}
    ]
    since = client.get("/v1/broadcasts?since=2026-09-21T14:30:00Z", headers=auth()).get_json()["items"]
    assert [b["stream_id"] for b in since] == ["a"]
    until = client.get("/v1/broadcasts?until=1790000150", headers=auth()).get_json()["items"]
    assert [b["stream_id"] for b in until] == ["b", "a"]
    assert client.get("/v1/broadcasts?status=archived", headers=auth()).get_json()["items"] == []


def test_cursor_pagination_visits_every_broadcast_once(client: FlaskClient, grouped: None) -> None:
    seen, cursor = [], None
    while True:
        query = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/broadcasts", query_string=query, headers=auth()).get_json()
        seen += [b["id"] for b in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 4


@pytest.mark.parametrize(
    "query, reason",
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=501", "limit"),
        ("since=yesterday", "since"),
        ("cursor=%%%", "cursor"),
        ("cursor=WzFd", "cursor"),
    ],
)
def test_bad_query_parameters_are_400(client: FlaskClient, query: str, reason: str) -> None:
    answer = client.get(f"/v1/broadcasts?{query}", headers=auth())
    assert answer.status_code == 400 and reason in answer.get_json()["error"]


def test_show_broadcast_and_404(client: FlaskClient, grouped: None) -> None:
    (first, *_) = client.get("/v1/broadcasts?stream_id=b", headers=auth()).get_json()["items"]
    shown = client.get(f"/v1/broadcasts/{first['id']}", headers=auth()).get_json()
    assert shown["id"] == first["id"] and shown["archive"] is None and shown["archives"] == []
    assert shown["fragments"][0]["source_key"] == "tencent:f4"
    missing = client.get("/v1/broadcasts/nope", headers=auth())
    assert missing.status_code == 404 and missing.get_json() == {"code": 404, "error": "no broadcast 'nope'"}


def test_fragments_filter_and_page(client: FlaskClient, grouped: None) -> None:
    page = client.get("/v1/fragments?stream_id=a&limit=3", headers=auth()).get_json()
    assert [f["source_key"] for f in page["items"]] == ["tencent:f3", "tencent:f2", "tencent:f1"]
    rest = client.get(f"/v1/fragments?stream_id=a&limit=3&cursor={page['next_cursor']}", headers=auth()).get_json()
    assert [f["source_key"] for f in rest["items"]] == ["tencent:f0"] and rest["next_cursor"] is None


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    assert client.get("/nope").get_json()["code"] == 404
    assert client.get("/v1/callbacks/tencent").get_json()["code"] == 405


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_readiness_reports_a_dead_broker(app: Flask, client: FlaskClient) -> None:
    from recorder.demo import free_port
    from recorder.queue import Publisher

    with app.app_context():
        svc = services()
    svc.publisher = Publisher(svc.settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"}))
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["checks"]["broker"].startswith("unreachable")


def test_metrics_count_the_work_from_the_database(client: FlaskClient, grouped: None) -> None:
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers=auth(READER)).get_data(as_text=True)
    assert 'recorder_broadcasts{status="settling"} 4.0' in text
    assert "recorder_fragments 6.0" in text and "recorder_events_unhandled 0.0" in text


def cursor(values: object) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


@pytest.mark.parametrize(
    "path, status, reason",
    [
        # PostgreSQL refuses a NUL in text with an error: each must be refused before it gets there.
        ("/v1/broadcasts?stream_id=a%00b", 400, "stream_id: must be printable"),
        ("/v1/broadcasts?stream_prefix=a%00", 400, "stream_prefix: must be printable"),
        ("/v1/broadcasts?app=a%00", 400, "app: must be printable"),
        ("/v1/fragments?stream_id=a%00b", 400, "stream_id: must be printable"),
        ("/v1/broadcasts/a%00b", 404, "not found"),
        ("/v1/broadcasts/a%00b/stitch", 404, "not found"),
        ("/v1/jobs/j%00", 404, "not found"),
        ("/v1/broadcasts?status=bogus", 400, "status"),
        ("/v1/broadcasts?format=mkv", 400, "format"),
        # Cursors are the client's to tamper with: each is checked before it reaches SQL.
        (f"/v1/broadcasts?cursor={cursor([{'a': 1}, 'x'])}", 400, "cursor"),
        (f"/v1/broadcasts?cursor={cursor([10**30, 'x'])}", 400, "cursor"),
        (f"/v1/broadcasts?cursor={cursor(['x', 'y'])}", 400, "cursor"),
        (f"/v1/broadcasts?cursor={cursor([1, 2])}", 400, "cursor"),
        (f"/v1/broadcasts?cursor={cursor([True, 'b1'])}", 400, "cursor"),
        (f"/v1/fragments?cursor={cursor([[1], [2]])}", 400, "cursor"),
        (f"/v1/fragments?cursor={cursor([1, 'x'])}", 400, "cursor"),
        (f"/v1/fragments?cursor={cursor([1, 2**70])}", 400, "cursor"),
        (f"/v1/jobs?cursor={cursor([1, 2])}", 400, "cursor"),
        (f"/v1/jobs?cursor={cursor(['x', 'y'])}", 400, "cursor"),
        ("/v1/jobs?cursor=" + "W" * 30 + "%3D", 400, "cursor"),
    ],
)
def test_hostile_filters_ids_and_cursors_are_refused_and_change_nothing(
    client: FlaskClient, grouped: None, path: str, status: int, reason: str
) -> None:
    answer = client.get(path, headers=auth()) if not path.endswith("/stitch") else client.post(path, headers=auth())
    assert answer.status_code == status, answer.get_json()
    assert reason in answer.get_json()["error"].lower()


def test_a_cursor_this_api_returned_still_pages(client: FlaskClient, grouped: None) -> None:
    for path in ("/v1/broadcasts", "/v1/fragments"):
        first = client.get(f"{path}?limit=1", headers=auth()).get_json()
        assert client.get(f"{path}?limit=1&cursor={first['next_cursor']}", headers=auth()).status_code == 200


@pytest.mark.parametrize(
    "body, reason",
    [
        ("[" * 5000 + "]" * 5000, "body must be a JSON object"),  # deeper than the JSON parser goes
        ('{"stream_id": "s", "start": true, "end": 1790000100}', "start: expected ISO 8601"),
        ('{"stream_id": "s", "start": 1790000000, "end": 1790000000e10}', "end: expected ISO 8601"),
        ('{"stream_id": "s", "start": 1790000000, "end": ' + "9" * 4000 + "}", "end: expected ISO 8601"),
        ('{"stream_id": "s", "start": "2026-01-01", "end": "2126-01-01"}', "at most 7 days"),
    ],
)
def test_bad_declarations_are_400_and_declare_nothing(client: FlaskClient, body: str, reason: str) -> None:
    answer = client.post("/v1/broadcasts", data=body, content_type="application/json", headers=auth())
    assert answer.status_code == 400 and reason in answer.get_json()["error"], answer.get_json()
    assert client.get("/v1/broadcasts", headers=auth()).get_json()["items"] == []


def test_a_window_may_be_declared_for_one_format(client: FlaskClient) -> None:
    body = {"stream_id": "s", "start": 1790000000, "end": 1790000100, "format": "hls"}
    declared = client.post("/v1/broadcasts", json=body, headers=auth())
    assert declared.status_code == 201 and declared.get_json()["status"] == "settling", declared.get_json()
    refused = client.post("/v1/broadcasts", json={**body, "format": "mkv"}, headers=auth())
    assert refused.status_code == 400 and "format" in refused.get_json()["error"]
