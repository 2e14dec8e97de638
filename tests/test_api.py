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
