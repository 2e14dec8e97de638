"""Pure grouping: which recorded fragments make one broadcast.

Two fragments with the same grouping key (push domain, path, stream) are linked
when the gap between them is at most the reconnect window, or when they carry
the same recording ``session_id``; a broadcast is a connected set of links.
Fragments inside a window the app declared belong to it whatever the gaps.
Connected sets do not depend on the order fragments arrived in.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Timed(Protocol):
    @property
    def source_key(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


class Grouped(Timed, Protocol):
    @property
    def session_id(self) -> str | None: ...


T = TypeVar("T", bound=Grouped)
P = TypeVar("P", bound=Timed)


@dataclass(frozen=True)
class Gap:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Window:
    """A span the app declared for one stream (and for one app, appname or format, if it named
    them): the fragments it takes are one broadcast."""

    stream_id: str
    start: float
    end: float
    app: str = ""  # "": any
    appname: str = ""
    format: str = ""

    def takes(self, fragment: object) -> bool:
        """Whether the fragment is of what this window was declared for; its span is window_for's."""
        wanted = {"stream_id": self.stream_id, "app": self.app, "appname": self.appname, "format": self.format}
        return all(not value or getattr(fragment, name, None) == value for name, value in wanted.items())


@dataclass(frozen=True)
class Placement(Generic[P]):
    """Where a fragment goes on the timeline: ``trim`` seconds already covered by earlier ones;
    ``redundant`` when they cover all of it."""

    fragment: P
    trim: float
    redundant: bool


def window_for(start: float, end: float, windows: Iterable[Window]) -> Window | None:
    """The declared window holding a span's midpoint (the earliest, if windows overlap)."""
    middle = (start + end) / 2
    holding = [w for w in windows if w.start <= middle <= w.end]
    return min(holding, key=lambda w: (w.start, w.end)) if holding else None


def group_fragments(
    fragments: Iterable[T],
    window: float,
    key: Callable[[T], Hashable],
    windows: Sequence[Window] = (),
) -> list[list[T]]:
    """Partition fragments into broadcasts, each sorted by start time.

    Duplicates (same ``source_key``) count once. Groups are ordered by key and
    start time, so equal inputs always give equal outputs.
    """
    unique = sorted({f.source_key: f for f in fragments}.values(), key=lambda f: (f.start, f.end, f.source_key))
    parent = list(range(len(unique)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    declared: dict[Window, int] = {}
    free: dict[Hashable, list[int]] = {}
    for i, fragment in enumerate(unique):
        chosen = window_for(fragment.start, fragment.end, [w for w in windows if w.takes(fragment)])
        if chosen is None:
            free.setdefault(key(fragment), []).append(i)
        elif chosen in declared:
            union(i, declared[chosen])
        else:
            declared[chosen] = i

    for members in free.values():
        covered_until, last = float("-inf"), -1
        sessions: dict[str, int] = {}
        for i in members:  # members are in start order
            fragment = unique[i]
            if last >= 0 and fragment.start - covered_until <= window:
                union(i, last)
            covered_until, last = max(covered_until, fragment.end), i
            if fragment.session_id:
                union(i, sessions.setdefault(fragment.session_id, i))

    groups: dict[int, list[T]] = {}
    for i, fragment in enumerate(unique):
        groups.setdefault(find(i), []).append(fragment)
    return sorted(groups.values(), key=lambda g: (repr(key(g[0])), g[0].start, g[0].source_key))


def gaps(fragments: Iterable[Timed]) -> list[Gap]:
    """Holes in the timeline of one broadcast's fragments."""
    result: list[Gap] = []
    covered_until: float | None = None
    for fragment in sorted(fragments, key=lambda f: (f.start, f.end)):
        if covered_until is not None and fragment.start > covered_until:
            result.append(Gap(covered_until, fragment.start))
        covered_until = fragment.end if covered_until is None else max(covered_until, fragment.end)
    return result


def timeline(fragments: Iterable[P]) -> list[Placement[P]]:
    """Fragments in start order, each with the seconds an earlier one already covered."""
    placements: list[Placement[P]] = []
    covered_until = float("-inf")
    for fragment in sorted(fragments, key=lambda f: (f.start, -f.end, f.source_key)):
        trim = max(0.0, min(covered_until, fragment.end) - fragment.start)
        # Not trim >= its length: a fragment with no length (end == start) is not covered by nothing.
        placements.append(Placement(fragment, trim, redundant=covered_until >= fragment.end))
        covered_until = max(covered_until, fragment.end)
    return placements
