"""The OpenAPI document is generated from the code, and the API keeps to it.

Schemathesis generates requests from the document (valid and invalid ones)
and sends each with an admin, a read-only and no token to the real app: no
answer may be a 5xx, and every answer must match its documented schema.
"""

from __future__ import annotations

import tempfile
import threading

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from werkzeug.serving import make_server

from recorder.app import create_app
from recorder.config import Settings
from recorder.demo import free_port
from tests.factories import ADMIN, KEY, READER

_scratch = tempfile.mkdtemp(prefix="recorder-openapi-")
app = create_app(
    Settings(
        database_url=f"sqlite:///{_scratch}/recorder.db",
        storage_url=f"file://{_scratch}/archive",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",  # refused at once: publishing is best effort
        callback_keys=(KEY,),
        api_tokens=(ADMIN, f"{READER}:read"),
        work_dir=f"{_scratch}/work",
    )
)
# Over real HTTP, not WSGI: the WSGI transport turns a generated object into its Python repr,
# a valid string, while Schemathesis still counts it as the invalid object it generated (and
# fails the "schema-violating request accepted" check at random). Its HTTP transport sends, and
# judges, what goes on the wire.
_server = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=_server.serve_forever, daemon=True).start()
BASE_URL = f"http://127.0.0.1:{_server.server_port}"
schema = schemathesis.openapi.from_url(f"{BASE_URL}/v1/openapi.json")


# /readyz answers 503 here by design (no broker); test_api covers it.
@schema.exclude(path="/readyz").parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_keeps_to_its_document(case: schemathesis.Case) -> None:
    for token in (ADMIN, READER, None):
        # Cursors are opaque tokens the API issued: a schema-valid made-up one is rightly refused.
        case.call_and_validate(
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            excluded_checks=[positive_data_acceptance],
        )


def test_document_lists_every_endpoint_of_the_contract() -> None:
    paths = app.test_client().get("/v1/openapi.json").get_json()["paths"]
    assert {
        "/v1/callbacks/tencent",
        "/v1/broadcasts",
        "/v1/broadcasts/{broadcast_id}",
        "/v1/broadcasts/{broadcast_id}/stitch",
        "/v1/fragments",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/healthz",
        "/readyz",
    } <= set(paths)
