"""The reference for intake: a bare Flask route answering {"code":0}, served by ``recorder serve``
itself (the same gunicorn settings, worker class, threads and access log), only with this app
in place of the real one.

    python -m bench.bare --port 8001 [--workers 2]
"""

from __future__ import annotations

import sys

from flask import Flask

import recorder.app


def create_bare_app(settings: object = None) -> Flask:
    app = Flask("bare")

    @app.post("/v1/callbacks/tencent")
    def callback() -> dict[str, int]:
        return {"code": 0}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    recorder.app.create_app = create_bare_app  # type: ignore[assignment]  # serve imports it when it runs
    from recorder.cli import main

    main(["serve", *sys.argv[1:]])
