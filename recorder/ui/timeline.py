"""A broadcast's timeline as geometry for an inline SVG; pure, so it is tested without a browser.

Wall-clock time runs left to right. The first row holds the fragments as
recorded; gaps are shaded across every row and labeled with their length; each
archive version gets a row with the pieces its manifest says it used and a mark
at every join.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recorder.grouping import Gap
from recorder.store.models import Fragment
from recorder.timeutil import parse_time
from recorder.ui.formatting import clock, duration, filesize

WIDTH = 1000
LEFT = 110  # room for the row labels
RIGHT = 12
AXIS = 26  # tick labels above the rows
ROW = 26
SPACING = 10
GAP_LABELS = 20  # gap lengths below the rows, where they never cover a bar
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_TICKS = 8


@dataclass(frozen=True)
class Piece:
    """A fragment as one archive version's manifest placed it."""

    start: float
    end: float
    join: str  # "copy", a re-encode, or why it was left out
    offset: float | None  # where it starts in the archive; None when left out
    trimmed: float  # seconds an earlier fragment already covered


@dataclass(frozen=True)
class Version:
    label: str
    duration: float
    pieces: list[Piece] | None  # None when there is no manifest to read


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    kind: str  # CSS classes
    label: str
    title: str


@dataclass(frozen=True)
class Mark:
    x: float
    title: str


@dataclass(frozen=True)
class Row:
    label: str
    y: float
    bars: list[Bar]
    joins: list[Mark]


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: float
    rows: list[Row]
    gaps: list[Bar]
    ticks: list[Tick]
    rows_top: float
    rows_bottom: float


def pieces(manifest: Mapping[str, Any]) -> list[Piece]:
    """The pieces of a manifest (see ``pipeline.build_manifest``); KeyError/ValueError if it is not one."""
    return [
        Piece(
            start=parse_time(entry["start"]),
            end=parse_time(entry["end"]),
            join=str(entry["join"]),
            offset=float(entry["offset"]) if "offset" in entry else None,
            trimmed=float(entry.get("trimmed") or 0),
        )
        for entry in manifest["fragments"]
    ]


@dataclass(frozen=True)
class _Scale:
    t0: float
    t1: float

    def x(self, t: float) -> float:
        return round(LEFT + (t - self.t0) / (self.t1 - self.t0) * (WIDTH - LEFT - RIGHT), 2)

    def bar(self, start: float, end: float, kind: str, label: str, title: str, *, fit: bool = True) -> Bar:
        """A bar from start to end; a label that would not fit inside it is dropped when ``fit``."""
        left = self.x(start)
        width = max(self.x(end) - left, 2.0)  # a one-second piece of a long day stays visible
        return Bar(left, round(width, 2), kind, label if not fit or width >= 7 * len(label) + 6 else "", title)


def build(
    fragments: Sequence[Fragment], gaps: Sequence[Gap], versions: Sequence[Version], *, span: tuple[float, float]
) -> Timeline:
    """Lay out the rows; ``span`` is the broadcast's own (a declared window may be wider than its fragments)."""
    t0 = min([span[0], *(f.start for f in fragments)])
    t1 = max([span[1], *(f.end for f in fragments)])
    scale = _Scale(t0, max(t1, t0 + 1))
    rows = [Row("fragments", AXIS, [_fragment_bar(scale, n, f) for n, f in enumerate(fragments, 1)], [])]
    for version in versions:
        y = AXIS + len(rows) * (ROW + SPACING)
        if version.pieces is None:
            label = f"{duration(version.duration)} (no manifest)"
            rows.append(Row(version.label, y, [scale.bar(scale.t0, scale.t1, "piece unknown", label, label)], []))
            continue
        used = sorted((p for p in version.pieces if p.offset is not None), key=lambda p: p.start + p.trimmed)
        joins = [
            Mark(scale.x(p.start + p.trimmed), f"join ({p.join}) at {p.offset:.2f} s into the archive")
            for p in used[1:]
        ]
        rows.append(Row(version.label, y, [_piece_bar(scale, piece) for piece in version.pieces], joins))
    bottom = AXIS + len(rows) * (ROW + SPACING) - SPACING
    gap_bars = [
        scale.bar(g.start, g.end, "gap", duration(g.seconds), f"gap {clock(g.start)} → {clock(g.end)}", fit=False)
        for g in gaps
    ]
    return Timeline(WIDTH, bottom + GAP_LABELS, rows, gap_bars, _ticks(scale), AXIS, bottom)


def _fragment_bar(scale: _Scale, n: int, fragment: Fragment) -> Bar:
    title = (
        f"#{n} {clock(fragment.start)} → {clock(fragment.end)}, {duration(fragment.end - fragment.start)}, "
        f"{filesize(fragment.file_size)}"
    )
    if fragment.error:
        return scale.bar(fragment.start, fragment.end, "fragment error", f"#{n}", f"{title}: {fragment.error}")
    return scale.bar(fragment.start, fragment.end, "fragment" + (" alt" if n % 2 == 0 else ""), f"#{n}", title)


def _piece_bar(scale: _Scale, piece: Piece) -> Bar:
    span = f"{clock(piece.start)} → {clock(piece.end)}"
    if piece.offset is None:
        return scale.bar(piece.start, piece.end, "piece left-out", "", f"{span}: {piece.join}")
    title = f"{span}: at {piece.offset:.2f} s in the archive ({piece.join})"
    if piece.trimmed:
        title += f", first {piece.trimmed:.2f} s covered by the previous fragment"
    return scale.bar(piece.start + piece.trimmed, piece.end, "piece", piece.join, title)


def _ticks(scale: _Scale) -> list[Tick]:
    span = scale.t1 - scale.t0
    step = next((s for s in STEPS if span / s <= MAX_TICKS), STEPS[-1] * math.ceil(span / STEPS[-1] / MAX_TICKS))
    first = math.ceil(scale.t0 / step) * step
    return [Tick(scale.x(t), clock(t, seconds=step < 60)) for t in range(first, int(scale.t1) + 1, step)]
