"""Grouping: pure partition, and the database's incremental grouping agrees with it."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from recorder.grouping import Gap, Window, gaps, group_fragments, timeline
from recorder.store import repository
from recorder.store.db import make_engine, make_sessions, migrate, transaction
from recorder.store.models import Broadcast, Event, Fragment

WINDOW = 300.0


@dataclass(frozen=True)
class Piece:
    source_key: str
    stream: str
    start: float
    end: float
    session_id: str | None = None
    format: str = "mp4"

    @property
    def stream_id(self) -> str:
        return self.stream


def key(piece: Piece) -> str:
    return piece.stream


pieces = st.lists(
    st.builds(
        lambda n, stream, start, length, session: Piece(f"f{n}", stream, float(start), float(start + length), session),
        st.integers(0, 10_000),
        st.sampled_from(["a", "b"]),
        st.integers(0, 20_000),
        st.integers(1, 2_000),
        st.sampled_from([None, None, "s1", "s2"]),
    ),
    max_size=25,
    unique_by=lambda p: p.source_key,
)


def within_window(start: float, end: float, other_start: float, other_end: float, window: float) -> bool:
    """The rule, stated directly: two spans overlap or are at most ``window`` seconds apart."""
    return other_start - end <= window and start - other_end <= window


def partition(groups: list[list[Piece]]) -> set[frozenset[str]]:
    return {frozenset(p.source_key for p in group) for group in groups}


def test_gap_within_window_joins_and_beyond_splits() -> None:
    a, b, c = Piece("1", "s", 0, 6), Piece("2", "s", 8, 14), Piece("3", "s", 400, 406)
    groups = group_fragments([c, b, a], WINDOW, key)
    assert partition(groups) == {frozenset({"1", "2"}), frozenset({"3"})}
    assert [p.source_key for p in groups[0]] == ["1", "2"]


def test_bridging_fragment_merges_two_groups() -> None:
    a, c = Piece("1", "s", 0, 10), Piece("3", "s", 700, 710)
    assert len(group_fragments([a, c], WINDOW, key)) == 2
    bridge = Piece("2", "s", 300, 400)
    assert len(group_fragments([a, c, bridge], WINDOW, key)) == 1


def test_gaps_and_window_predicate() -> None:
    assert gaps([Piece("2", "s", 8, 14), Piece("1", "s", 0, 6), Piece("3", "s", 5, 7)]) == [Gap(7, 8)]
    assert within_window(0, 10, 310, 320, 300)
    assert not within_window(0, 10, 311, 320, 300)


@given(pieces, st.randoms(use_true_random=False), st.integers(0, 3))
def test_grouping_ignores_order_and_duplicates(items: list[Piece], rnd, dupes: int) -> None:  # type: ignore[no-untyped-def]
    shuffled = items + [rnd.choice(items) for _ in range(dupes if items else 0)]
    rnd.shuffle(shuffled)
    assert partition(group_fragments(shuffled, WINDOW, key)) == partition(group_fragments(items, WINDOW, key))


def linked(a: Piece, b: Piece) -> bool:
    same_session = a.session_id is not None and a.session_id == b.session_id
    return a.stream == b.stream and (within_window(a.start, a.end, b.start, b.end, WINDOW) or same_session)


@given(pieces)
def test_groups_are_connected_inside_and_unlinked_between(items: list[Piece]) -> None:
    groups = group_fragments(items, WINDOW, key)
    assert sum(len(g) for g in groups) == len(items)
    for group in groups:
        reached, frontier = {group[0].source_key}, [group[0]]
        while frontier:
            piece = frontier.pop()
            for other in group:
                if other.source_key not in reached and linked(piece, other):
                    reached.add(other.source_key)
                    frontier.append(other)
        assert reached == {p.source_key for p in group}
    for i, one in enumerate(groups):
        for other in groups[i + 1 :]:
            assert not any(linked(a, b) for a in one for b in other)


def test_same_session_joins_across_a_long_gap_and_windows_claim_their_fragments() -> None:
    a, b = Piece("1", "s", 0, 6, "77"), Piece("2", "s", 5000, 5006, "77")
    assert len(group_fragments([a, b], WINDOW, key)) == 1
    c, d = Piece("3", "s", 100, 106), Piece("4", "s", 110, 116)  # 4 s apart, but a window holds d
    groups = group_fragments([c, d], WINDOW, key, windows=[Window("s", 108, 200)])
    assert partition(groups) == {frozenset({"3"}), frozenset({"4"})}
    assert partition(group_fragments([c, d], WINDOW, key, windows=[Window("other", 108, 200)])) == {
        frozenset({"3", "4"})
    }


def test_timeline_trims_overlaps_and_drops_covered_fragments() -> None:
    a, b, c = Piece("1", "s", 0, 10), Piece("2", "s", 8, 14), Piece("3", "s", 2, 5)
    placed = {p.fragment.source_key: p for p in timeline([c, b, a])}
    assert [p.fragment.source_key for p in timeline([c, b, a])] == ["1", "3", "2"]
    assert placed["1"].trim == 0 and placed["2"].trim == 2 and placed["3"].redundant


def test_a_fragment_of_no_length_is_left_out_only_where_an_earlier_one_covers_it() -> None:
    """Its end equals its start (a callback may say so): alone, or in a gap, it is stitched."""
    alone, inside, in_a_gap = Piece("1", "s", 10, 10), Piece("2", "s", 3, 3), Piece("3", "s", 30, 30)
    assert [p.redundant for p in timeline([alone])] == [False]
    placed = timeline([Piece("0", "s", 0, 20), inside, in_a_gap])
    assert [(p.fragment.source_key, p.redundant) for p in placed] == [("0", False), ("2", True), ("3", False)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces, st.randoms(use_true_random=False))
def test_database_grouping_in_any_arrival_order_equals_pure_grouping(items: list[Piece], rnd) -> None:  # type: ignore[no-untyped-def]
    arrival = list(items)
    rnd.shuffle(arrival)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/g.db")
        migrate(engine)
        sessions = make_sessions(engine)
        for n, piece in enumerate(arrival):
            with transaction(sessions) as session:
                repository.assign_fragment(session, stored(session, piece), window=WINDOW, now=float(n))
        with sessions() as session:
            assert stored_partition(session) == partition(group_fragments(items, WINDOW, key))
        engine.dispose()


def stored(session: Session, piece: Piece) -> Fragment:
    """``piece`` stored as a fragment, not grouped yet."""
    event = Event(provider="t", event_type="100", dedupe_key=piece.source_key, body="{}", received_at=0)
    session.add(event)
    session.flush()
    fragment = Fragment(
        session_id=piece.session_id,
        source_key=piece.source_key,
        event_id=event.id,
        app="d",
        appname="live",
        stream_id=piece.stream,
        format=piece.format,
        start=piece.start,
        end=piece.end,
        duration=piece.end - piece.start,
        url="http://x/",
        received_at=0,
    )
    session.add(fragment)
    session.flush()
    return fragment


def stored_partition(session: Session, stream: str | None = None) -> set[frozenset[str]]:
    """The fragments (of ``stream``, or all) by the broadcast the database put them in."""
    query = select(Fragment.broadcast_id, Fragment.source_key)
    groups: dict[str, set[str]] = {}
    for broadcast_id, source_key in session.execute(query if stream is None else query.filter_by(stream_id=stream)):
        groups.setdefault(broadcast_id, set()).add(source_key)
    return {frozenset(group) for group in groups.values()}


def grouped_in_database(tmp_path: Path, arrivals: Iterable[Sequence[Piece | Window]]) -> Iterator[set[frozenset[str]]]:
    """For each order of arrival, on a stream of its own: the partition the database makes."""
    engine = make_engine(f"sqlite:///{tmp_path}/w.db")
    migrate(engine)
    sessions = make_sessions(engine)
    for n, arrival in enumerate(arrivals):
        stream = f"s{n}"
        for item in arrival:
            with transaction(sessions) as session:
                if isinstance(item, Window):
                    declared = {"stream_id": stream, "start": item.start, "end": item.end, "format": item.format}
                    repository.declare_window(session, **declared, window=WINDOW, now=0)
                else:
                    piece = replace(item, source_key=f"{stream}/{item.source_key}", stream=stream)
                    repository.assign_fragment(session, stored(session, piece), window=WINDOW, now=0)
        with sessions() as session:
            yield {frozenset(key.partition("/")[2] for key in group) for group in stored_partition(session, stream)}
    engine.dispose()


def test_overlapping_declared_windows_take_a_fragment_alike_in_any_arrival_order(tmp_path: Path) -> None:
    """Of two declared windows holding a fragment, the earliest takes it, as window_for decides,
    whether the fragment came before the windows, between them or after them."""
    f, g = Piece("f", "s", 140, 160), Piece("g", "s", 250, 260)  # 90 s apart: one broadcast without windows
    early, late = Window("s", 50, 200), Window("s", 100, 300)  # g is in the late one only
    expected = partition(group_fragments([f, g], WINDOW, key, windows=[early, late]))
    assert expected == {frozenset({"f"}), frozenset({"g"})}
    arrivals = list(itertools.permutations([f, g, early, late]))
    for arrival, got in zip(arrivals, grouped_in_database(tmp_path, arrivals), strict=True):
        assert got == expected, arrival


def test_a_window_declared_for_one_format_takes_only_its_fragments_in_any_arrival_order(tmp_path: Path) -> None:
    """A push recorded as MP4 and HLS at once: a window for HLS holds the HLS fragments; the MP4
    ones, 200 s apart, group as if there were no window, wherever the window came in."""
    pieces = [Piece("m1", "s", 0, 60), Piece("m2", "s", 260, 320), Piece("h1", "s", 0, 60, format="hls")]
    pieces.append(Piece("h2", "s", 460, 520, format="hls"))  # 400 s after h1: held only by the window
    hls = Window("s", 0, 600, format="hls")
    expected = partition(group_fragments(pieces, WINDOW, key=lambda p: p.format, windows=[hls]))
    assert expected == {frozenset({"m1", "m2"}), frozenset({"h1", "h2"})}
    arrivals = [[*pieces[:at], hls, *pieces[at:]] for at in range(len(pieces) + 1)]  # before, between, after
    for arrival, got in zip(arrivals, grouped_in_database(tmp_path, arrivals), strict=True):
        assert got == expected, arrival


def test_a_declared_window_emptied_by_an_earlier_one_keeps_its_state(tmp_path: Path) -> None:
    """Its archive stays current and it still holds the rest of its span; it does not reopen to
    fail for want of fragments."""
    engine = make_engine(f"sqlite:///{tmp_path}/w.db")
    migrate(engine)
    sessions = make_sessions(engine)
    with transaction(sessions) as session:
        late = repository.declare_window(session, stream_id="s", start=100, end=300, window=WINDOW, now=0)
        repository.assign_fragment(session, stored(session, Piece("f", "s", 140, 160)), window=WINDOW, now=0)
        late.status, late.version, late_id = "archived", 1, late.id
    with transaction(sessions) as session:
        early = repository.declare_window(session, stream_id="s", start=50, end=200, window=WINDOW, now=1)
        early_id = early.id
    with sessions() as session:
        assert [f.broadcast_id for f in session.scalars(select(Fragment))] == [early_id]
        assert (session.get_one(Broadcast, late_id).status, session.get_one(Broadcast, late_id).version) == (
            "archived",
            1,
        )
    engine.dispose()
