"""The ``recorder`` command."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError
from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from recorder.config import ConfigError, Settings
from recorder.errors import RecorderError
from recorder.present import human_duration, human_size
from recorder.timeutil import parse_time

if TYPE_CHECKING:
    from recorder.client import Client

JSON = dict[str, Any]


class RecorderGroup(click.Group):
    """Expected errors end a command with one line on stderr and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RecorderError as error:
            raise click.ClickException(error.reason) from None
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        except ValidationError as error:
            if error.title != Settings.__name__:
                raise
            raise click.ClickException(str(ConfigError.explaining(error))) from None


@click.group(cls=RecorderGroup)
def main() -> None:
    """Tencent Cloud recording callbacks in, one verified archive per broadcast out.

    The operator commands (broadcasts, fragments, stitch, import, jobs) use the
    database named by RECORDER_DATABASE_URL, or a server with --url.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the web app (callbacks, operator API) under gunicorn."""
    from gunicorn.app.base import BaseApplication

    from recorder.app import create_app

    app = create_app(Settings())  # migrates once, before the workers fork

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
            # The path without its query string: SRS and nginx-rtmp put their token there.
            self.cfg.set("access_log_format", '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s"')
            self.cfg.set("limit_request_line", 8190)

        def load(self):  # type: ignore[no-untyped-def]
            return app

    Server().run()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--beat/--no-beat", default=True, show_default=True, help="also run the sweep scheduler (run exactly one)"
)
@click.option("--concurrency", default=2, show_default=True, type=int)
@click.option(
    "--queues",
    default="events,media,prefetch",
    show_default=True,
    help="events: callbacks and sweeps (fast); media: stitches (downloads, ffmpeg, uploads; long);"
    " prefetch: fragments fetched and probed as they arrive, kept in the work dir for the stitch",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=1),
    default=None,
    help="seconds a task may run before its process is killed and the broadcast retried"
    " [default: half the broker's visibility timeout, from RECORDER_FFMPEG_TIMEOUT and RECORDER_LEASE_SECONDS]",
)
@click.pass_context
def worker(ctx: click.Context, beat: bool, concurrency: int, queues: str, time_limit: float | None) -> None:
    """Run a Celery worker (extra options go to Celery), plus the sweep scheduler."""
    from worker.celery_app import app

    work_dir = Settings().work_dir
    os.makedirs(work_dir, exist_ok=True)
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}", f"--queues={queues}"]
    if time_limit:
        argv.append(f"--time-limit={time_limit}")
    if beat:
        argv.append("--sweep")  # from the worker's own timer: no beat process
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


# --- operator commands: shared options and output ------------------------------

STYLES = {
    "open": "blue",
    "settling": "cyan",
    "stitching": "yellow",
    "archived": "green",
    "suspect": "magenta",
    "failed": "bold red",
    "merged": "dim",
    "queued": "dim",
    "running": "yellow",
    "done": "green",
}
FINAL = ("done", "failed")
POLL_SECONDS = 1.0
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


class TimeType(click.ParamType):
    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return parse_time(value)
        except (TypeError, ValueError):
            self.fail(f"expected ISO 8601 or UNIX seconds, got {value!r}", param, ctx)


TIME = TimeType()


class Out:
    """Where a command's answers go: tables or the API's JSON on stdout, notes and progress on stderr."""

    def __init__(self, url: str | None, token: str | None, as_json: bool) -> None:
        self.url, self.token, self.json = url, token, as_json
        self.console = Console()
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            self.console.width = 200  # piped: whole rows beat fitting 80 columns
        self.notes = Console(stderr=True)

    @functools.cached_property
    def client(self) -> Client:
        # Opened on first use, so usage errors never touch the database.
        from recorder.client import open_client

        return open_client(self.url, self.token)

    def emit(self, document: JSON, render: Callable[[JSON], RenderableType]) -> None:
        if self.json:
            click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        else:
            self.console.print(render(document))

    def note(self, message: str) -> None:
        self.notes.print(message, highlight=False, soft_wrap=True)


def connected(command: Callable[..., None]) -> Callable[..., None]:
    """Add --url, --token and --json; the command gets an ``Out`` in their place."""

    @click.option("--url", envvar="RECORDER_URL", show_envvar=True, help="A recorder server instead of the database.")
    @click.option("--token", envvar="RECORDER_TOKEN", show_envvar=True, help="Bearer token for --url.")
    @click.option("--json", "as_json", is_flag=True, help="Print the HTTP API's JSON document instead of tables.")
    @functools.wraps(command)
    def wrapper(url: str | None, token: str | None, as_json: bool, **kwargs: Any) -> None:
        command(Out(url, token, as_json), **kwargs)

    return wrapper


def options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Several click options as one decorator, in the order given."""

    def apply(command: Any) -> Any:
        return functools.reduce(lambda c, d: d(c), reversed(decorators), command)

    return apply


PAGED = options(
    click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="Rows per page."),
    click.option("--cursor", help="Continue after a page (its next_cursor)."),
    click.option("--all", "everything", is_flag=True, help="Every page, as one list."),
)
TIMES = options(
    click.option("--since", type=TIME, help="Ending at or after this time (ISO 8601 or UNIX seconds; UTC if no zone)."),
    click.option("--until", type=TIME, help="Starting at or before this time."),
)
JOB = options(
    click.option("--dry-run", is_flag=True, help="Only show the broadcasts that would be formed."),
    click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the job until it ends."),
)


def list_page(
    out: Out,
    fetch: Callable[[JSON], JSON],
    query: JSON,
    what: str,
    render: Callable[[JSON], Table],
    *,
    everything: bool,
) -> None:
    from recorder.client import collect

    page = collect(fetch, query, everything=everything)
    if not out.json and not page["items"]:
        out.note(f"No {what} match.")
        return
    out.emit(page, render)
    if not out.json and page["next_cursor"]:
        out.note(f"More {what}: add --all, or --cursor {page['next_cursor']}")


# --- rendering ------------------------------------------------------------------


def status_text(status: str, error: str | None = None) -> Text:
    """A colored status, and the reason below it when there is one."""
    text = Text(status, style=STYLES.get(status, ""))
    if error:
        text.append(f"\n{error}", style="red")
    return text


def when(value: str | None) -> str:
    """The API's ISO 8601 UTC to the second: still valid input for --since and --until."""
    return f"{value[:19]}Z" if value else "–"


def span(start: str | None, end: str | None) -> str:
    return human_duration(parse_time(end) - parse_time(start)) if start and end else "–"


# Long columns fold on a narrow terminal; the short ones and times stay whole.
FOLDING = {"ID", "Broadcast", "Stream", "Status", "Source key", "Key"}


def table(*columns: str, title: str | None = None) -> Table:
    result = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    for column in columns:
        folds = column in FOLDING
        result.add_column(column, no_wrap=not folds, overflow="fold")
    return result


def broadcasts_table(page: JSON) -> Table:
    rows = table("ID", "Stream", "Status", "Started (UTC)", "Span", "Frags", "Gaps", "Archive")
    for b in page["items"]:
        archive = b["archive"]
        rows.add_row(
            b["id"],
            b["stream_id"],
            status_text(b["status"]),
            when(b["started_at"]),
            span(b["started_at"], b["ended_at"]),
            str(len(b["fragments"])),
            str(len(b["gaps"])),
            f"v{archive['version']} {human_size(archive['size'])}" if archive else "–",
        )
    return rows


def broadcast_detail(b: JSON) -> RenderableType:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("Broadcast", b["id"])
    facts.add_row("Stream", f"{b['stream_id']}  (app {b['app'] or '–'}, appname {b['appname'] or '–'})")
    facts.add_row("Status", status_text(b["status"], b["error"]))
    facts.add_row("Span", f"{when(b['started_at'])} → {when(b['ended_at'])}  ({span(b['started_at'], b['ended_at'])})")
    facts.add_row("Format", b["format"] or "–")
    gap_seconds = sum(g["seconds"] for g in b["gaps"])
    facts.add_row("Fragments", f"{len(b['fragments'])}, {len(b['gaps'])} gaps ({human_duration(gap_seconds)})")
    if b["archive"]:
        a = b["archive"]
        facts.add_row(
            "Archive", f"v{a['version']} {a['key']}  {human_size(a['size'])}, {human_duration(a['duration'])}"
        )
        facts.add_row("Download", a["url"])
    parts: list[RenderableType] = [facts]

    fragments = table("#", "Start (UTC)", "End (UTC)", "Duration", "Size", "Format", "Source key")
    for n, f in enumerate(b["fragments"], 1):
        fragments.add_row(
            str(n),
            when(f["start"]),
            when(f["end"]),
            human_duration(f["duration"]),
            human_size(f["file_size"]),
            f["format"],
            Text(f["source_key"]).append(f"\n{f['error']}" if f["error"] else "", style="red"),
        )
    parts.append(fragments)
    if b["gaps"]:
        gaps = table("Gap from (UTC)", "To (UTC)", "Length", title="Gaps")
        for g in b["gaps"]:
            gaps.add_row(when(g["start"]), when(g["end"]), human_duration(g["seconds"]))
        parts.append(gaps)
    if b["archives"]:
        versions = table("V", "Format", "Size", "Duration", "Created (UTC)", "Key", title="Archive versions")
        for a in b["archives"]:
            versions.add_row(
                str(a["version"]),
                a["format"],
                human_size(a["size"]),
                human_duration(a["duration"]),
                when(a["created_at"]),
                a["key"],
            )
        parts.append(versions)
    return Group(*parts)


def fragments_table(page: JSON) -> Table:
    rows = table("Start (UTC)", "Duration", "Size", "Format", "Stream", "Broadcast", "Source key")
    for f in page["items"]:
        rows.add_row(
            when(f["start"]),
            human_duration(f["duration"]),
            human_size(f["file_size"]),
            f["format"],
            f["stream_id"],
            f["broadcast_id"] or "–",
            f["source_key"],
        )
    return rows


def progress_text(job: JSON) -> str:
    p = job["progress"]
    return f"{p['done']}/{p['total']} done, {p['failed']} failed, {human_size(p['bytes'])}"


def jobs_table(page: JSON) -> Table:
    rows = table("ID", "Kind", "Status", "Progress", "Created (UTC)")
    for job in page["items"]:
        kind = f"{job['kind']} (dry run)" if job["dry_run"] else job["kind"]
        rows.add_row(job["id"], kind, status_text(job["status"]), progress_text(job), when(job["created_at"]))
    return rows


def proposal(broadcasts: list[JSON]) -> RenderableType:
    if not broadcasts:
        return "Dry run: no fragments in that selection, so no broadcasts would be formed."
    fragments = sum(len(b["fragments"]) for b in broadcasts)
    title = f"Dry run: {len(broadcasts)} broadcasts would be formed from {fragments} fragments"
    rows = table("Stream", "Start (UTC)", "End (UTC)", "Frags", "New", "Gaps", "Expected", title=title)
    for b in broadcasts:
        rows.add_row(
            b["stream_id"],
            when(b["started_at"]),
            when(b["ended_at"]),
            str(len(b["fragments"])),
            str(sum(f["new"] for f in b["fragments"])),
            f"{len(b['gaps'])} ({human_duration(sum(g['seconds'] for g in b['gaps']))})",
            human_duration(b["expected_duration"]),
        )
    return rows


def job_detail(job: JSON) -> RenderableType:
    if job["dry_run"]:
        return proposal(job["broadcasts"])
    title = Text.assemble(f"Job {job['id']} ({job['kind']}): ", status_text(job["status"]), f"  {progress_text(job)}")
    if job["error"]:
        title.append(f"\n{job['error']}", style="red")
    rows = table("Broadcast", "Stream", "Status", "V", "Started (UTC)", "Span")
    for b in job["broadcasts"]:
        rows.add_row(
            b["id"],
            b["stream_id"],
            status_text(b["status"], b["error"]),
            str(b["version"]),
            when(b["started_at"]),
            span(b["started_at"], b["ended_at"]),
        )
    return Group(title, rows) if job["broadcasts"] else title


# --- jobs: submit, follow -------------------------------------------------------


def submit_job(out: Out, spec: JSON, *, wait: bool) -> None:
    job, created = out.client.submit(spec)
    if not created:
        out.note(f"Job {job['id']} already exists ({job['status']}): these inputs were submitted before.")
    elif not job["dry_run"]:
        out.note(f"Submitted job {job['id']}.")
    show_job(out, job, wait=wait and not job["dry_run"])


def show_job(out: Out, job: JSON, *, wait: bool) -> None:
    """Print the job; with ``wait``, follow it to its end first and fail if it failed."""
    if wait:
        job = follow(out, job)
    out.emit(job, job_detail)
    if wait and job["status"] == "failed":
        raise click.ClickException(f"job {job['id']} failed: {job['error']}")
    if wait and job["progress"]["failed"]:
        raise click.ClickException(f"job {job['id']}: {job['progress']['failed']} broadcasts failed")


def bar_fields(job: JSON) -> JSON:
    p, status = job["progress"], job["status"]
    return {
        "total": None if status == "queued" else p["total"],  # unknown until the job starts
        "completed": p["done"] + p["failed"],
        "status": f"[{STYLES[status]}]{status}[/]",
        "done": p["done"],
        "failed": p["failed"],
        "size": human_size(p["bytes"]),
    }


def follow(out: Out, job: JSON) -> JSON:
    """Poll the job every second until it ends, with a progress bar; Ctrl-C stops waiting, not the job."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}  [green]{task.fields[done]} done[/]  [red]{task.fields[failed]} failed[/]"),
        TextColumn("{task.fields[size]}"),
        TimeElapsedColumn(),
        console=out.notes,
        disable=out.json,
    )
    with bar, ctrl_c() as stopped:
        task = bar.add_task(f"job {job['id']}", **bar_fields(job))
        while job["status"] not in FINAL and not stopped.wait(POLL_SECONDS):
            job = out.client.job(job["id"])
            bar.update(task, **bar_fields(job))
    if job["status"] in FINAL:
        return job
    out.note(f"Stopped waiting; job {job['id']} goes on. Follow it with: recorder jobs show {job['id']} --wait")
    raise click.exceptions.Exit(130)


@contextmanager
def ctrl_c() -> Iterator[threading.Event]:
    """Ctrl-C sets the event instead of raising KeyboardInterrupt wherever the program happens to
    be (inside a lock held by the progress bar or the database pool, which would stay held)."""
    stopped = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)


# --- operator commands ------------------------------------------------------------


@main.group()
def broadcasts() -> None:
    """Find broadcasts and see their fragments, gaps and archives."""


@broadcasts.command("list")
@click.option("--stream-id", help="Exactly this stream id.")
@click.option("--prefix", "stream_prefix", help="Stream ids starting with this.")
@click.option(
    "--status",
    type=click.Choice(["open", "settling", "stitching", "archived", "suspect", "failed"]),
    help="Only these.",
)
@click.option("--app", help="Push domain.")
@click.option("--appname", help="Push path.")
@click.option("--format", help="Recorded format (mp4, hls, flv, aac).")
@TIMES
@PAGED
@connected
def list_broadcasts(out: Out, everything: bool, **query: Any) -> None:
    """List broadcasts, newest first."""
    list_page(out, out.client.broadcasts, query, "broadcasts", broadcasts_table, everything=everything)


@broadcasts.command("show")
@click.argument("broadcast_id")
@connected
def show_broadcast(out: Out, broadcast_id: str) -> None:
    """Show a broadcast: fragments in order, gaps, archive versions and the download URL."""
    out.emit(out.client.broadcast(broadcast_id), broadcast_detail)


@broadcasts.command("stitch")
@click.argument("broadcast_id")
@connected
def stitch_broadcast(out: Out, broadcast_id: str) -> None:
    """Finalize a broadcast now, or stitch it again: its next archive is a new version."""
    broadcast = out.client.stitch(broadcast_id)
    out.note(f"Stitch requested: {broadcast_id} will be version {broadcast['version'] + 1}.")
    out.emit(broadcast, broadcast_detail)


@main.group()
def fragments() -> None:
    """Find recorded fragments."""


@fragments.command("list")
@click.option("--stream-id", help="Exactly this stream id.")
@TIMES
@PAGED
@connected
def list_fragments(out: Out, everything: bool, **query: Any) -> None:
    """List fragments, newest first."""
    list_page(out, out.client.fragments, query, "fragments", fragments_table, everything=everything)


@main.command()
@click.option("--stream-id", "stream_ids", multiple=True, help="A stream to stitch (repeatable).")
@click.option("--prefix", help="Every stream whose id starts with this.")
@click.option("--since", type=TIME, required=True, help="From this time (ISO 8601 or UNIX seconds; UTC if no zone).")
@click.option("--until", type=TIME, required=True, help="To this time.")
@JOB
@connected
def stitch(
    out: Out, stream_ids: Iterable[str], prefix: str | None, since: float, until: float, dry_run: bool, wait: bool
) -> None:
    """Stitch (again) every broadcast of some streams in a time range, as one job."""
    if bool(stream_ids) == bool(prefix):
        raise click.UsageError("give --stream-id (one or more) or --prefix, not both")
    # Sorted: the job id derives from the inputs, so the order given must not matter.
    selector = {"stream_ids": sorted(set(stream_ids))} if stream_ids else {"stream_prefix": prefix}
    spec = {"kind": "stitch", **selector, "since": since, "until": until, "dry_run": dry_run}
    submit_job(out, spec, wait=wait)


@main.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Default: from FILE's extension.")
@click.option("--timezone", default="+08:00", show_default=True, help="UTC offset of VOD console file-name times.")
@JOB
@connected
def import_fragments(out: Out, file: Any, fmt: str | None, timezone: str, dry_run: bool, wait: bool) -> None:
    """Import a fragment list (CSV, or JSONL of callback bodies) and stitch the broadcasts it forms."""
    from recorder.imports import decode, parse_fragments

    fmt = fmt or FORMATS.get(Path(file.name).suffix.lower())
    if fmt is None:
        raise click.UsageError(f"cannot tell the format of {file.name}: pass --format csv or --format jsonl")
    data = decode(file.read())
    # Parsed here as well: a bad line fails before anything is sent, and the summary needs the count.
    parsed = parse_fragments(data, fmt, tz_offset=timezone)
    out.note(f"{file.name}: {len(parsed)} fragments of {len({f.stream_id for f in parsed})} streams.")
    spec = {"kind": "import", "format": fmt, "data": data, "timezone": timezone, "dry_run": dry_run}
    submit_job(out, spec, wait=wait)


@main.group()
def jobs() -> None:
    """Follow and list batch jobs (stitch, import)."""


@jobs.command("show")
@click.argument("job_id")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Follow the job until it ends.")
@connected
def show_job_command(out: Out, job_id: str, wait: bool) -> None:
    """Show a job's progress and its broadcasts (for a dry run, the proposal)."""
    show_job(out, out.client.job(job_id), wait=wait)


@jobs.command("list")
@PAGED
@connected
def list_jobs(out: Out, everything: bool, **query: Any) -> None:
    """List jobs, newest first."""
    list_page(out, out.client.jobs, query, "jobs", jobs_table, everything=everything)


if __name__ == "__main__":
    main()
