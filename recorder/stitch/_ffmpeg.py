"""Running ffmpeg and ffprobe: every run has a deadline and every failure a reason.

Commands are built with ffmpeg-python but run with ``subprocess.run``, which kills the child
on timeout or on any exception (a Celery soft time limit included); a worker killed outright
(``kill -9``, the OOM killer, Celery's hard time limit) runs no cleanup, so the kernel is asked
to kill the child then (``PR_SET_PDEATHSIG``). No ffmpeg outlives its call.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from typing import Any, NamedTuple

from recorder.errors import StitchError

DEMUXERS = {"mp4": "mp4", "flv": "flv", "hls": "hls", "aac": "aac", "ts": "mpegts"}
# The hls demuxer's default list plus "key": it refuses AES-128 key files named *.key otherwise.
HLS_EXTENSIONS = (
    "3gp,aac,avi,ac3,eac3,flac,mkv,m3u8,m4a,m4s,m4v,mpg,mov,mp2,mp3,mp4,mpeg,mpegts,ogg,ogv,oga,ts,vob,wav,key"
)
CONTEXT = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")  # "[mov,mp4,... @ 0x55..] " log prefix
_STDERR_TAIL = 4000  # characters of stderr kept on a StitchError
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class Deadline(NamedTuple):
    at: float
    budget: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def left(self) -> float:
        return max(self.at - time.monotonic(), 0.001)


def input_options(fmt: str | None) -> dict[str, str]:
    """How to read a local file of a known format (one of DEMUXERS' keys): only local files."""
    options = {"protocol_whitelist": whitelist(fmt)}
    if fmt:
        options["f"] = DEMUXERS[fmt]
    if fmt == "hls":
        options["allowed_extensions"] = HLS_EXTENSIONS
    return options


def input_args(fmt: str | None) -> list[str]:
    return [arg for name, value in input_options(fmt).items() for arg in (f"-{name}", value)]


def whitelist(*formats: str | None) -> str:
    """What ffmpeg may open to read files of these formats: local files, and crypto for the AES-128
    segments of a local HLS playlist."""
    return "file,crypto" if "hls" in formats else "file"


def compiled(node: Any) -> list[str]:
    cmd: list[str] = node.global_args("-nostdin", "-hide_banner", "-loglevel", "error").overwrite_output().compile()
    return cmd


def _die_with(parent: int) -> None:
    """In the child, before exec: SIGKILL when the thread that started it dies (or already has).

    Only a ctypes call on a function resolved at import runs here, nothing that could take a
    lock another thread held at fork time.
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # type: ignore[union-attr]
    if os.getppid() != parent:
        os._exit(1)


def run(cmd: list[str], deadline: Deadline, *, subject: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd,
            preexec_fn=functools.partial(_die_with, os.getpid()) if _LIBC else None,  # noqa: PLW1509
            stdin=subprocess.DEVNULL,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=deadline.left(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise StitchError(
            f"{cmd[0]} timed out after {deadline.budget:g} s on {subject}", cmd=cmd, stderr=stderr[-_STDERR_TAIL:]
        ) from None
    except OSError as exc:
        raise StitchError(f"cannot run {cmd[0]}: {exc}", cmd=cmd) from None


def failure(reason: str, cmd: list[str], stderr: str) -> StitchError:
    """A StitchError whose reason ends with ffmpeg's last distinct messages."""
    detail = last_messages(stderr) or "no error output"
    return StitchError(f"{reason}: {detail}", cmd=cmd, stderr=stderr[-_STDERR_TAIL:])


def last_messages(stderr: str) -> str:
    lines = [CONTEXT.sub("", line).strip() for line in stderr.splitlines()]
    return "; ".join(list(dict.fromkeys(line for line in lines if line))[-2:])


def seconds(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # ffprobe leaves out what it does not know, or says "N/A"


def rate(value: str | None) -> float | None:
    try:
        frames = Fraction(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None  # "0/0" when unknown
    return float(frames) or None
