"""The worker's processes hand large freed buffers back to the system (glibc's heap settings)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

# Four threads each take 8 MB buffers in turn, as transfer threads do, with a small allocation
# after each so the heap cannot simply shrink; prints how much the process grew, in MB.
TRANSFERS = """
import sys, threading, psutil
from worker.memory import hand_back_freed_memory
if sys.argv[1] == "tuned":
    hand_back_freed_memory()

def transfer(kept):
    for _ in range(6):
        buffer = bytearray(8 * 1024 * 1024)
        kept.append(bytearray(1000))
        del buffer

me = psutil.Process()
before = me.memory_info().rss
kept = []
threads = [threading.Thread(target=transfer, args=(kept,)) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print((me.memory_info().rss - before) / 1e6)
"""
ROOT = Path(__file__).parents[1]


def grown_mb(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", TRANSFERS, mode], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's heap settings")
def test_freed_transfer_buffers_go_back_to_the_system() -> None:
    assert grown_mb("tuned") < 2
    assert grown_mb("default") > 8  # what the setting is for: glibc keeps them otherwise
