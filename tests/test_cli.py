"""The `recorder` operator commands through their real entry point, as processes.

The database backend reads the test's SQLite file through the environment; the
--url backend talks to the same app served on a free port; a real `recorder
worker` runs the import job that `jobs show --wait` follows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from recorder.config import Settings
from recorder.demo import process
from tests.factories import ADMIN, KEY, READER, auth

CLI = [sys.executable, "-m", "recorder.cli"]
START = 1_790_000_000  # 2026-09-21T14:13:20Z
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the commands call the same functions on either database, and processes are slow."""
    return f"sqlite:///{tmp_path / 'recorder.db'}"


@pytest.fixture
def env(settings: Settings, redis_url: str) -> dict[str, str]:
    """What points a `recorder` process at the test's database, storage and media."""
    return {
        **os.environ,
        "RECORDER_DATABASE_URL": settings.database_url,
        # A Redis database of its own: no other test's messages reach the worker.
        "RECORDER_BROKER_URL": redis_url.rsplit("/", 1)[0] + "/5",
        "RECORDER_STORAGE_URL": settings.storage_url,
        "RECORDER_WORK_DIR": str(settings.work_dir),
        "RECORDER_MEDIA_HOSTS": ",".join(settings.media_hosts),
        "RECORDER_CALLBACK_KEYS": KEY,
        "COLUMNS": "200",
    }


def recorder(
    env: dict[str, str], *args: str, code: int = 0, cwd: Path | None = None, **more_env: str
) -> subprocess.CompletedProcess[str]:
    """Run the command; check its exit code and that no traceback escaped."""
    done = subprocess.run(
        [*CLI, *args], env={**env, **more_env}, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == code, f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def test_broadcasts_list_as_table_and_as_the_apis_json(env: dict[str, str], grouped: None, client: FlaskClient) -> None:
    table = recorder(env, "broadcasts", "list").stdout
    assert "Stream" in table and "Gaps" in table
    rows = [line.split() for line in table.splitlines() if line.startswith("b")]
    assert [(row[1], row[2], row[3]) for row in rows] == [
        ("a", "settling", "2026-09-21T15:13:20Z"),
        ("c", "settling", "2026-09-21T14:16:40Z"),
        ("b", "settling", "2026-09-21T14:15:00Z"),
        ("a", "settling", "2026-09-21T14:13:20Z"),
    ]
    assert rows[0][4:8] == ["14.0", "s", "2", "1"]  # span, fragments, gaps

    assert as_json(recorder(env, "broadcasts", "list", "--json")) == client.get("/v1/broadcasts", headers=auth()).json
    first = as_json(recorder(env, "broadcasts", "list", "--stream-id", "a", "--limit", "1", "--json"))
    assert len(first["items"]) == 1 and first["next_cursor"]
    every = as_json(recorder(env, "broadcasts", "list", "--prefix", "a", "--all", "--json"))
    assert len(every["items"]) == 2 and every["next_cursor"] is None
    assert "No broadcasts match." in recorder(env, "broadcasts", "list", "--status", "archived").stderr


def test_broadcast_show_and_fragments(env: dict[str, str], grouped: None, client: FlaskClient) -> None:
    (latest, _) = client.get("/v1/broadcasts?stream_id=a", headers=auth()).json["items"]
    shown = recorder(env, "broadcasts", "show", latest["id"]).stdout
    assert "tencent:f2" in shown and "tencent:f3" in shown
    assert "2, 1 gaps (2.0 s)" in shown and "2026-09-21T15:13:26Z" in shown  # the gap's start
    assert as_json(recorder(env, "broadcasts", "show", latest["id"], "--json")) == latest

    fragments = as_json(
        recorder(env, "fragments", "list", "--stream-id", "a", "--since", "2026-09-21T15:00Z", "--json")
    )
    assert [f["source_key"] for f in fragments["items"]] == ["tencent:f3", "tencent:f2"]

    proposal = recorder(
        env, "stitch", "--stream-id", "a", "--since", str(START), "--until", str(START + 7200), "--dry-run"
    )
    assert "Dry run: 2 broadcasts would be formed from 4 fragments" in proposal.stdout

    restitched = recorder(env, "broadcasts", "stitch", latest["id"], "--json")
    assert as_json(restitched)["status"] == "stitching" and "will be version 1" in restitched.stderr


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["broadcasts", "show", "nope"], 1, "Error: no broadcast 'nope'"),
        (["jobs", "show", "nope"], 1, "Error: no job 'nope'"),
        (["broadcasts", "stitch", "nope"], 1, "Error: no broadcast 'nope'"),
        (["broadcasts", "list", "--cursor", "xyz"], 1, "cursor is not one this API returned"),
        (["broadcasts", "list", "--since", "yesterday"], 2, "Invalid value for '--since'"),
        (["stitch", "--since", "1", "--until", "2"], 2, "give --stream-id (one or more) or --prefix"),
        (["stitch", "--prefix", "a", "--since", "2", "--until", "1"], 1, "until must be after since"),
        (["import", "fragments.txt"], 2, "pass --format csv or --format jsonl"),
        (["import", "bad.csv"], 1, "line 2: start_time"),
        (["import", "latin1.csv"], 1, "file: expected UTF-8 text"),
        (["import", "vod.csv", "--timezone", "+99:00"], 1, "timezone: expected an offset"),
        (["import", "vod.csv", "--dry-run", "--timezone", "+99:00"], 1, "timezone: expected an offset"),
    ],
)
def test_errors_are_one_line_and_an_exit_code(
    env: dict[str, str], tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "fragments.txt").write_text("x")
    (tmp_path / "bad.csv").write_text("stream_id,file_format,start_time,end_time,video_url\ns,mp4,soon,1,http://h/a\n")
    (tmp_path / "latin1.csv").write_bytes("stream_id,note\ns,caf\u00e9\n".encode("latin-1"))
    (tmp_path / "vod.csv").write_text(
        "FileName,URL\nx_2026-09-21-22-13-20_2026-09-21-22-43-20,http://x.myqcloud.com/a\n"
    )
    stderr = recorder(env, *args, code=code, cwd=tmp_path).stderr
    assert message in stderr
    assert code == 2 or stderr.count("\n") == 1  # usage errors also print the usage line


@pytest.mark.parametrize("variable, value", [("RECORDER_RECONNECT_WINDOW", "abc"), ("RECORDER_SWEEP_SECONDS", "-7")])
@pytest.mark.parametrize("command", [["broadcasts", "list"], ["serve"], ["worker"]])
def test_a_bad_setting_is_one_line_naming_it(
    env: dict[str, str], command: list[str], variable: str, value: str
) -> None:
    stderr = recorder(env, *command, code=1, **{variable: value}).stderr
    assert stderr.startswith(f"Error: {variable}: ") and stderr.count("\n") == 1 and value not in stderr


def test_url_backend_answers_like_the_database(env: dict[str, str], grouped: None, server: str) -> None:
    direct = as_json(recorder(env, "broadcasts", "list", "--json"))
    assert as_json(recorder(env, "broadcasts", "list", "--json", "--url", server, "--token", ADMIN)) == direct
    shown = recorder(env, "broadcasts", "show", direct["items"][0]["id"], "--url", server, RECORDER_TOKEN=READER)
    assert "tencent:f3" in shown.stdout

    missing = recorder(env, "broadcasts", "show", "nope", "--url", server, "--token", ADMIN, code=1)
    assert missing.stderr == "Error: no broadcast 'nope'\n"
    anonymous = recorder(env, "broadcasts", "list", "--url", server, code=1)
    assert "bearer token is required" in anonymous.stderr and "--token" in anonymous.stderr
    spec = ["stitch", "--prefix", "a", "--since", str(START), "--until", str(START + 60), "--dry-run"]
    assert "read-only" in recorder(env, *spec, "--url", server, "--token", READER, code=1).stderr
    restitch = ["broadcasts", "stitch", direct["items"][0]["id"], "--url", server, "--token", READER]
    assert "read-only" in recorder(env, *restitch, code=1).stderr
    refused = recorder(env, "jobs", "list", "--url", "http://127.0.0.1:9", code=1)
    assert refused.stderr == "Error: cannot reach http://127.0.0.1:9: Connection refused\n"


def fragment_csv(path: Path, media_url: str, media_dir: Path) -> Path:
    """50 fragments of 6 s, 2 s apart, across 5 streams an hour apart, pointing at the real clips."""
    lines = ["stream_id,file_format,start_time,end_time,video_url,file_size,file_id"]
    for s in range(5):
        for i in range(10):
            clip, begin = f"clip{i % 3}.mp4", START + 3600 * s + 8 * i
            size = (media_dir / clip).stat().st_size
            lines.append(f"class_{s},mp4,{begin},{begin + 6},{media_url}/{clip},{size},f{s}-{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_dry_run_then_for_real_twice_with_progress(
    env: dict[str, str], server: str, media_url: str, media_dir: Path, tmp_path: Path
) -> None:
    csv = str(fragment_csv(tmp_path / "fragments.csv", media_url, media_dir))
    dry = recorder(env, "import", csv, "--dry-run")
    assert "fragments.csv: 50 fragments of 5 streams." in dry.stderr
    assert "Dry run: 5 broadcasts would be formed from 50 fragments" in dry.stdout
    proposal = as_json(recorder(env, "import", csv, "--dry-run", "--json"))
    assert len(proposal["broadcasts"]) >= 5
    assert all(b["expected_duration"] == 60 and len(b["gaps"]) == 9 for b in proposal["broadcasts"])

    with process([*CLI, "worker", "--concurrency=2"], env, tmp_path / "worker.log"):
        first = recorder(env, "import", csv, "--no-wait", "--json")
        job = as_json(first)
        assert f"Submitted job {job['id']}." in first.stderr and not job["dry_run"]
        again = recorder(env, "import", csv, "--no-wait", "--json", "--url", server, "--token", ADMIN)
        assert as_json(again)["id"] == job["id"] and "already exists" in again.stderr

        # A pseudo-terminal for rich, so the live bar is drawn as an operator sees it.
        followed = recorder(env, "jobs", "show", job["id"], "--wait", TTY_COMPATIBLE="1", TTY_INTERACTIVE="1")
    bar = ANSI.sub("", followed.stderr)
    assert f"job {job['id']}" in bar and "5/5" in bar and "5 done" in bar and "0 failed" in bar
    assert f"Job {job['id']} (import): done  5/5 done, 0 failed" in ANSI.sub("", followed.stdout)

    final = as_json(recorder(env, "jobs", "show", job["id"], "--json"))
    assert final["status"] == "done" and final["progress"]["done"] == 5 and final["progress"]["bytes"] > 0
    archived = as_json(recorder(env, "broadcasts", "list", "--prefix", "class_", "--status", "archived", "--json"))
    assert sorted(b["stream_id"] for b in archived["items"]) == [f"class_{s}" for s in range(5)]
    assert all(b["archive"]["duration"] == pytest.approx(60, abs=1) for b in archived["items"])


def test_ctrl_c_stops_waiting_not_the_job(env: dict[str, str], grouped: None) -> None:
    """No worker runs here, so the job stays queued while the command waits."""
    spec = ["stitch", "--stream-id", "b", "--since", str(START), "--until", str(START + 3600)]
    job = as_json(recorder(env, *spec, "--no-wait", "--json"))
    waiting = subprocess.Popen(
        [*CLI, "jobs", "show", job["id"], "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(4)  # started and polling
    waiting.send_signal(signal.SIGINT)
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 130 and "Traceback" not in stderr
    assert f"Stopped waiting; job {job['id']} goes on" in stderr
    assert as_json(recorder(env, "jobs", "show", job["id"], "--json"))["status"] == "queued"
