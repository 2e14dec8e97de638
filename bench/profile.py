"""Profile one broadcast through the worker's steps, in this process, with pyinstrument.

    python -m bench.profile [--seconds 60] [--s3]

Ingests 4 MP4 fragments through the real app (a Flask test client), prefetches and settles
them, then runs ``pipeline.stitch_broadcast`` under the profiler; media come from a loopback HTTP server and,
with ``--s3``, the archive goes to moto's S3 server, as in bench.e2e.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import media
from bench.common import CACHE, logs_dir
from bench.services import BUCKET, KEY, media_server, record_body, s3_server
from recorder import pipeline
from recorder.app import create_app
from recorder.config import Settings
from recorder.store.db import transaction
from recorder.store.models import Event


class _NoBroker:
    def send(self, task: str, *args: object) -> bool:
        return True

    def handle_later(self, event_id: int) -> None:
        pass

    def tell_workers(self, command: str, **arguments: object) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="length of each of the 4 fragments")
    parser.add_argument("--s3", action="store_true", help="archive to moto's S3 server instead of a directory")
    args = parser.parse_args()
    from pyinstrument import Profiler

    files = media.fragments("mp4", 4, args.seconds)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="profile-", dir=CACHE)))
        logs = logs_dir("profile")
        base = stack.enter_context(media_server(files[0].parent, logs))
        storage, endpoint = f"file://{tmp / 'archive'}", None
        if args.s3:
            endpoint = stack.enter_context(s3_server(logs))
            storage = f"s3://{BUCKET}/profile"
        settings = Settings(
            database_url=f"sqlite:///{tmp / 'recorder.db'}",
            storage_url=storage,
            s3_endpoint_url=endpoint,
            callback_keys=(KEY,),
            media_hosts=(base.removeprefix("http://"),),
            work_dir=tmp / "work",
            settle_seconds=0,
        )
        client = create_app(settings, publisher=_NoBroker()).test_client()  # type: ignore[arg-type]
        start = time.time() - 3600
        for i, path in enumerate(files):
            body = record_body(
                stream_id="profiled",
                file_id=f"p{i}",
                url=f"{base}/{path.name}",
                start=start + i * args.seconds,
                seconds=args.seconds,
                size=path.stat().st_size,
            )
            assert client.post("/v1/callbacks/tencent", json=body).status_code == 200
        ctx = pipeline.Context.build(settings, publisher=_NoBroker())
        with transaction(ctx.sessions) as session:
            events = [e.id for e in session.query(Event).all()]
        for event_id in events:
            pipeline.handle_event(ctx, event_id)
        for fragment_id in pipeline.fragments_to_prefetch(ctx, events):  # as the worker does while it settles
            pipeline.prefetch(ctx, fragment_id)
        time.sleep(0.1)
        work = pipeline.sweep(ctx)
        (broadcast_id,) = work.stitches
        profiler = Profiler(interval=0.001)
        with profiler:
            outcome = pipeline.stitch_broadcast(ctx, broadcast_id)
        print(f"outcome: {outcome}")
        print(profiler.output_text(unicode=False, show_all=False))


if __name__ == "__main__":
    main()
