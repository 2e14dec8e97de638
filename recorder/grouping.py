"""Pure grouping: which recorded fragments make one broadcast.

Fragments with the same grouping key (push domain, path, stream, format) belong
together when the gap between them is at most the reconnect window. The answer
depends only on the set of fragments, never on the order they arrived in.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Timed(Protocol):
    @property
    def source_key(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


T = TypeVar("T", bound=Timed)


@dataclass(frozen=True)
class Gap:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def within_window(start: float, end: float, other_start: float, other_end: float, window: float) -> bool:
    """True when two time spans overlap or are at most ``window`` seconds apart."""
    return other_start - end <= window and start - other_end <= window


def group_fragments(fragments: Iterable[T], window: float, key: Callable[[T], Hashable]) -> list[list[T]]:
    """Partition fragments into broadcasts, each sorted by start time.

    Duplicates (same ``source_key``) count once. Groups are returned ordered by
    key and start time, so equal inputs always give equal outputs.
    """
    unique = {f.source_key: f for f in fragments}
    ordered = sorted(unique.values(), key=lambda f: (repr(key(f)), f.start, f.end, f.source_key))
    groups: list[list[T]] = []
    current_key: object = object()
    current_end = 0.0
    for fragment in ordered:
        fragment_key = key(fragment)
        if groups and fragment_key == current_key and fragment.start - current_end <= window:
            groups[-1].append(fragment)
            current_end = max(current_end, fragment.end)
        else:
            groups.append([fragment])
            current_key, current_end = fragment_key, fragment.end
    return groups


def gaps(fragments: Iterable[Timed]) -> list[Gap]:
    """Holes in the timeline of one broadcast's fragments."""
    result: list[Gap] = []
    covered_until: float | None = None
    for fragment in sorted(fragments, key=lambda f: (f.start, f.end)):
        if covered_until is not None and fragment.start > covered_until:
            result.append(Gap(covered_until, fragment.start))
        covered_until = fragment.end if covered_until is None else max(covered_until, fragment.end)
    return result
