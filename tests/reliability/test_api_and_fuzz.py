"""Operator endpoints refuse whoever should not pass, found from the app's own URL map (so a new
endpoint is covered the day it is added); Schemathesis over /v1/openapi.json; Hypothesis over
the callback parser. Both backends."""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any

import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import func, select

from recorder.app import services
from recorder.archive import archive_key
from recorder.callbacks import tencent
from recorder.errors import RecorderError
from recorder.events import FragmentInfo
from recorder.store.models import Base
from tests.factories import ADMIN, KEY, READER, sample, signed
from tests.reliability.ledger import SAFE_KEY, Counts

# Open to anyone: health, the API's description, static files, the login page; callbacks carry their own proof.
PUBLIC = re.compile(
    r"/(healthz|readyz|v1/openapi\.json|apidoc/.*|static/.*|ui/static/.*|ui/login|ui/logout|v1/callbacks/.*)"
)


def made_up(variable: re.Match[str]) -> str:
    """A value its converter takes: an int, the first of an any(...), else an id."""
    converter, first = variable[1], variable[2]
    return "1" if converter == "int" else first if converter == "any" else "nope"


def operator_routes(app: Flask) -> list[tuple[str, str]]:
    """(method, path) of every endpoint that needs a token, with made-up ids in the path."""
    routes = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:(\w+)(?:\(([^,)]+)[^)]*\))?:)?\w+>", made_up, rule.rule)
        if not PUBLIC.fullmatch(rule.rule):
            routes += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


# No credential, unknown ones, a token in the wrong scheme or with its ":read" suffix.
WRONG = [None, "wrong", f"{ADMIN}x", f"{READER}:read", f"Basic {ADMIN}"]


def call(client: FlaskClient, method: str, path: str, credential: str | None) -> Any:
    """The API takes a bearer token; the pages a login cookie (and ignore Authorization)."""
    client.delete_cookie("recorder_token", path="/ui")
    if credential is None:
        return client.open(path, method=method)
    if path.startswith("/ui"):
        client.set_cookie("recorder_token", credential, path="/ui")
        return client.open(path, method=method, headers={"Authorization": f"Bearer {ADMIN}"})
    scheme = "" if credential.startswith("Basic ") else "Bearer "
    return client.open(path, method=method, headers={"Authorization": scheme + credential}, json={})


def rows(app: Flask) -> int:
    with services().sessions() as session:
        return sum(
            session.execute(select(func.count()).select_from(t)).scalar_one() for t in Base.metadata.sorted_tables
        )


def test_every_operator_endpoint_refuses_no_token_a_wrong_one_and_a_read_only_one_acting(
    app: Flask, client: FlaskClient, count: Counts
) -> None:
    routes = operator_routes(app)
    assert ("POST", "/v1/broadcasts/nope/stitch") in routes and ("GET", "/metrics") in routes
    with app.app_context():
        before = rows(app)
    for method, path in routes:
        for credential in WRONG:
            answer = call(client, method, path, credential)
            count("bad")
            if path.startswith("/ui") and answer.status_code == 302:  # pages send strangers to the login form
                assert answer.headers["Location"].startswith("/ui/login"), (method, path)
                continue
            assert answer.status_code == 401, (method, path, credential, answer.status_code)
            assert answer.get_json()["code"] == 401 and answer.get_json()["error"], (method, path)
        if method == "POST":  # an action: the read-only token may look, not act
            answer = call(client, method, path, READER)
            count("bad")
            assert answer.status_code == 403, (method, path, answer.status_code)
            assert path.startswith("/ui") or "read-only" in answer.get_json()["error"]
    with app.app_context():
        assert rows(app) == before  # nothing was done on anyone's behalf


def test_schemathesis_finds_no_5xx_and_no_answer_off_the_document(app: Flask, count: Counts) -> None:
    """Valid and invalid requests from the document, with an admin, a read-only and no token.

    (schemathesis.pytest.from_fixture does not work with pytest 9, so the operations' strategies
    are driven by Hypothesis here, with the app of each database backend.)
    """
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    # /readyz answers 503 by design here (nothing consumes the test's broker; test_api covers it).
    operations = [result.ok() for result in schema.get_all_operations() if result.ok().path != "/readyz"]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with contextlib.suppress(Unsatisfiable):  # nothing to get wrong (no parameters, no body)
                fuzz(operation, mode, count)


def fuzz(operation: Any, mode: GenerationMode, count: Counts) -> None:
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        for token in (ADMIN, READER, None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = case.call(headers=headers)
            count("bad")
            count("callbacks", int(operation.path.startswith("/v1/callbacks/")))
            if response.status_code >= 500:
                count("5xx")
            # Cursors are opaque tokens the API issued: a schema-valid made-up one is rightly refused.
            case.validate_response(response, headers=headers, excluded_checks=[positive_data_acceptance])

    check()


# --- Hypothesis over the callback parser -------------------------------------------------------

FIELDS = [*sample("css-record-mp4.json"), "event_type", "sequence", "event_time", "record_event"]
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner), max_leaves=5
)
BODIES = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), VALUES, max_size=6).map(
    lambda changes: {**sample("css-record-mp4.json"), **changes}
)


def check_parse(raw: bytes, count: Counts) -> None:
    """Received with sane facts, or a 400/401 RecorderError with a reason: never anything else."""
    count("bad")
    try:
        received = tencent.receive(raw, keys=(KEY,), now=time.time(), skew=30)
    except RecorderError as error:
        assert error.status in (400, 401) and error.reason
        return
    event = received.event
    if isinstance(event, FragmentInfo):
        assert event.url.startswith(("http://", "https://")) and event.end >= event.start
        key = archive_key(
            prefix="p", app=event.app, stream_id=event.stream_id, started_at=event.start, broadcast_id="b1", version=1,
            ext=event.format.value,
        )  # fmt: skip
        assert SAFE_KEY.fullmatch(key) and not {".", ".."} & set(key.split("/"))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=BODIES, sign=st.booleans())
def test_hypothesis_over_the_callback_parser_json(body: dict[str, Any], sign: bool, count: Counts) -> None:
    unsigned = {k: v for k, v in body.items() if k not in ("t", "sign")}
    check_parse(json.dumps(signed(unsigned) if sign else body).encode(), count)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_hypothesis_over_the_callback_parser_bytes(raw: bytes, count: Counts) -> None:
    check_parse(raw, count)
