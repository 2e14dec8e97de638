"""What every bench shares: result rows, timing, the table, the command line, and ffmpeg commands."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


@dataclass
class Row:
    """One figure: ours beside the reference measured in the same run.

    ``target`` is the ratio ours/reference must satisfy (``ratio <= target``; with
    ``higher_is_better`` it is ``ratio >= target``), or None for a figure shown for
    context. ``check`` overrides that with an absolute test and its text.
    """

    bench: str
    figure: str
    ours: float
    reference: float | None
    unit: str
    target: float | None = None
    higher_is_better: bool = False
    check: str | None = None  # e.g. "< 300 MB": then met says whether it holds
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.reference in (None, 0):
            return None
        return self.ours / self.reference  # type: ignore[operator]

    def evaluate(self) -> Row:
        if self.met is None and self.target is not None and self.ratio is not None:
            self.met = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return self

    @property
    def target_text(self) -> str:
        if self.check:
            return self.check
        if self.target is None:
            return ""
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}x"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        return cls(**data)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "":
        return f"{value:,.0f}"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"


def table(rows: list[Row]) -> str:
    header = ("bench", "figure", "ours", "reference", "ratio", "target", "met")
    lines = [header]
    for row in rows:
        row.evaluate()
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        met = "" if row.met is None else ("yes" if row.met else "NO")
        lines.append(
            (row.bench, row.figure, fmt(row.ours, row.unit), fmt(row.reference, row.unit), ratio, row.target_text, met)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    judged = [row for row in rows if row.evaluate().met is not None]
    return f"bench: {sum(row.met for row in judged)} of {len(judged)} targets met"  # type: ignore[misc]


def notes(rows: list[Row]) -> str:
    return "\n".join(f"- {row.bench} / {row.figure}: {row.note}" for row in rows if row.note)


def main(name: str, body: Callable[[argparse.Namespace], list[Row]], describe: str) -> None:
    """The command line every bench shares: ``--quick`` and ``--json PATH``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=describe)
    parser.add_argument("--quick", action="store_true", help="a short form CI can run (smaller media, fewer rounds)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here (bench.run uses it)")
    args = parser.parse_args()
    began = time.monotonic()
    rows = [row.evaluate() for row in body(args)]
    print(table(rows))
    if text := notes(rows):
        print(text)
    print(f"({name}: {time.monotonic() - began:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps([row.to_dict() for row in rows], indent=2))
    print(summary(rows))


# --- measuring ------------------------------------------------------------------


def logs_dir(bench: str) -> Path:
    """Where a bench leaves its services' logs (kept after the run, for a look at what took the time)."""
    path = CACHE / "logs" / bench
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)


def timed(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def interleaved(runs: int, **actions: Callable[[], Any]) -> dict[str, list[float]]:
    """Time each action ``runs`` times, taking turns (A B A B ...), so drift hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            times[name].append(timed(action))
    return times


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, failing loudly with its stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {ffmpeg}"
    )


@contextmanager
def step(what: str) -> Iterator[None]:
    """Say what is going on (on stderr, so the table stays clean)."""
    began = time.monotonic()
    print(f"[{what} ...]", file=sys.stderr, flush=True)
    yield
    print(f"[{what}: {time.monotonic() - began:.1f} s]", file=sys.stderr, flush=True)


# --- ffmpeg -----------------------------------------------------------------------


def concat_copy(paths: Sequence[Path], out: Path, *, muxer: str | None = None) -> list[str]:
    """The hand-written join: write the concat listing beside ``out`` (its name with .txt) and return
    the ffmpeg command that stream-copies ``paths`` into ``out`` with +faststart.

    ``muxer`` names the output format, for an ``out`` whose suffix does not say it.
    """
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{path}'\n" for path in paths))
    output = ["-f", muxer] if muxer else []
    return [
        *FFMPEG,
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        str(listing),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        *output,
        str(out),
    ]
