"""How the worker's processes use the C heap."""

from __future__ import annotations

import ctypes

_M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3  # glibc's mallopt() parameters


def hand_back_freed_memory() -> None:
    """Have glibc give the download and upload buffers back to the system once freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so the
    multi-MB buffers of the next transfers come from heaps that keep the memory, one heap per
    transfer thread: the worker tree kept ~30 MB more after each broadcast, and its peak on a
    2 GB one was 322 MB instead of 290 (bench.memory). A fixed threshold (glibc's default,
    128 KiB) and two heaps avoid that. The forked pool inherits it; without glibc, a no-op.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        mallopt(_M_ARENA_MAX, 2)
