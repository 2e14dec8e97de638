"""The ``recorder`` command."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from recorder.config import ConfigError, Settings


@click.group()
def main() -> None:
    """Tencent Cloud recording callbacks in, one verified archive per broadcast out."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the web app (callbacks, operator API) under gunicorn."""
    from gunicorn.app.base import BaseApplication

    from recorder.app import create_app

    settings = Settings()
    try:
        app = create_app(settings)  # migrates once, before the workers fork
    except ConfigError as error:
        raise click.ClickException(str(error)) from None

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            # Slow-drip bodies must not hold a worker: gthread with short timeouts.
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 8)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", "-")
            self.cfg.set("limit_request_line", 8190)

        def load(self):  # type: ignore[no-untyped-def]
            return app

    Server().run()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--beat/--no-beat", default=True, show_default=True, help="also run the sweep scheduler (run exactly one)"
)
@click.option("--concurrency", default=2, show_default=True, type=int)
@click.pass_context
def worker(ctx: click.Context, beat: bool, concurrency: int) -> None:
    """Run a Celery worker for both queues, plus the sweep scheduler."""
    from worker.celery_app import app

    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}", "--queues=events,media"]
    if beat:
        argv += ["--beat", f"--schedule={os.path.join(Settings().work_dir, 'celerybeat-schedule')}"]
    os.makedirs(Settings().work_dir, exist_ok=True)
    app.worker_main(argv + list(ctx.args))


@main.command()
@click.option("--fragments", default=3, show_default=True, help="sample fragments to record")
@click.option("--seconds", default=4, show_default=True, help="length of each fragment")
def demo(fragments: int, seconds: int) -> None:
    """Run the main job end to end on embedded defaults and print the archive."""
    from recorder.demo import run_demo

    sys.exit(run_demo(fragments=fragments, seconds=seconds))


@main.command()
@click.option("--key", required=True, help="callback key")
@click.option("--t", "t", type=int, default=None, help="expiry UNIX time (default: now + 10 min)")
def sign(key: str, t: int | None) -> None:
    """Print the sign Tencent would send for KEY and T."""
    from recorder.callbacks.tencent import expected_sign

    t = t if t is not None else int(time.time()) + 600
    click.echo(json.dumps({"t": t, "sign": expected_sign(key, str(t))}))


if __name__ == "__main__":
    main()
