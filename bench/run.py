"""Run every bench, each in its own process, and print one table.

    python -m bench.run [--quick] [--only intake,stitch] [--markdown PATH]

The last line reads ``bench: N of M targets met``. The exit status is 0 whether or not the
targets are met (a bench that crashes makes it 1): the table is the result.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Row, machine, notes, summary, table

BENCHES = ("intake", "stitch", "e2e", "memory", "scale", "mismatch")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short form of every bench (CI)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--markdown", type=Path, help="also write machine, command, date and the table here")
    args = parser.parse_args()
    chosen = [name for name in BENCHES if not args.only or name in args.only.split(",")]
    began = time.monotonic()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    rows: list[Row] = []
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in chosen:
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(out)] + (["--quick"] if args.quick else [])
            print(f"=== bench.{name} ===", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            done = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr, check=False)
            print(f"=== bench.{name}: {time.monotonic() - t0:.0f} s ===", file=sys.stderr, flush=True)
            if done.returncode != 0 or not out.exists():
                failed.append(name)
                continue
            rows += [Row.from_dict(row) for row in json.loads(out.read_text())]
    took = time.monotonic() - began
    text = table(rows)
    command = "python -m bench.run" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    header = [
        f"machine: {machine()}",
        f"date:    {started}; took {took / 60:.1f} min;"
        f" load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}",
        f"command: {command}",
    ]
    if load_before[0] > 1.0:
        header.append(
            f"warning: the machine was already busy (load {load_before[0]:.2f} on {os.cpu_count()} cores) before"
            " the benches started: absolute times are inflated and ratios noisier than on a quiet machine"
        )
    print("\n".join(header))
    print()
    print(text)
    if extra := notes(rows):
        print()
        print(extra)
    if failed:
        print(f"\nbenches that crashed: {', '.join(failed)}")
    if args.markdown:
        args.markdown.write_text(
            "\n".join(header)
            + "\n\n```\n"
            + text
            + "\n```\n\n"
            + (extra + "\n\n" if extra else "")
            + summary(rows)
            + "\n"
        )
    print(summary(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
