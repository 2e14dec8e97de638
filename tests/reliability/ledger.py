"""The figures the reliability suites print, and the audit that finds lost or duplicated work.

A ``Ledger`` sends callbacks (through a real server or the Flask test client), remembers
every recording callback answered 200, and at the end checks the database and the store:
each answered recording is one fragment; each broadcast ended as it should (an archive
whose object exists with the recorded size and SHA-256, or a failure with a reason); no
archive version or stored object beyond those expected.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from recorder.archive import ArchiveStore, S3Store
from recorder.events import FragmentInfo, parse_tencent
from recorder.store.models import Archive, Broadcast, Fragment

METRICS = {
    "bad": "bad inputs tried",
    "faults": "faults injected",
    "callbacks": "callbacks sent",
    "fragments": "fragments stored",
    "archives": "archives made",
    "lost": "lost (must be 0)",
    "duplicated": "duplicated (must be 0)",
    "5xx": "5xx (must be 0)",
}
MUST_BE_ZERO = ("lost", "duplicated", "5xx")
COLUMNS = ("sqlite", "postgresql", "no db")
SAFE_KEY = re.compile(r"[A-Za-z0-9._~%-]+(/[A-Za-z0-9._~%-]+)*")
FINAL = ("archived", "failed")


class Tally:
    """Counts per database backend, summed over the whole run (thread-safe)."""

    def __init__(self) -> None:
        self.columns = {name: Counter[str]() for name in COLUMNS}
        self._lock = threading.Lock()

    def add(self, column: str, metric: str, n: int = 1) -> None:
        assert metric in METRICS, metric
        with self._lock:
            self.columns[column][metric] += n

    def failures(self) -> dict[str, int]:
        return {m: n for m in MUST_BE_ZERO if (n := sum(c[m] for c in self.columns.values()))}

    def table(self) -> str:
        width = max(len(label) for label in METRICS.values())
        head = f"{'':<{width}}  " + "  ".join(f"{c:>10}" for c in (*COLUMNS, "total"))
        rows = [head, "-" * len(head)]
        for metric, label in METRICS.items():
            counts = [self.columns[c][metric] for c in COLUMNS]
            rows.append(f"{label:<{width}}  " + "  ".join(f"{n:>10}" for n in (*counts, sum(counts))))
        return "\n".join(rows)


@dataclass
class Counts:
    """One test's view of the tally: its database backend's column."""

    tally: Tally
    column: str

    def __call__(self, metric: str, n: int = 1) -> None:
        self.tally.add(self.column, metric, n)


# (path, raw body, headers) -> (status, JSON body or None)
Send = Callable[[str, bytes, dict[str, str]], tuple[int, Any]]


@dataclass
class Ledger:
    count: Counts
    sessions: sessionmaker[Session]
    store: ArchiveStore
    send: Send
    answered: dict[str, str] = field(default_factory=dict)  # source_key -> stream_id
    signs: set[str] = field(default_factory=set)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def post(
        self,
        body: dict[str, Any] | bytes,
        *,
        expect: int | tuple[int, ...] = 200,
        reason: str | None = None,
        bad: bool | None = None,
        path: str = "/v1/callbacks/tencent",
    ) -> Any:
        """Send one callback and check the answer: 200 ``{"code": 0}``, or one of ``expect`` with a
        JSON error naming ``reason``. A bad input is any that should not be archived as sent."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, answer = self.send(path, raw, {"Content-Type": "application/json"})
        expected = expect if isinstance(expect, tuple) else (expect,)
        self.count("callbacks")
        self.count("bad", int(expected != (200,) if bad is None else bad))
        if status >= 500 and status not in expected:
            self.count("5xx")
        assert status in expected, f"{status} {answer} (expected {expect})"
        if status == 200:
            assert answer == {"code": 0}, answer
        else:
            assert isinstance(answer, dict) and answer.get("code") not in (None, 0), answer
            assert reason is None or reason in answer["error"], answer
        if isinstance(body, dict):
            # What the server stored, parsed as it parsed it.
            event = parse_tencent(body) if status == 200 and path == "/v1/callbacks/tencent" else None
            with self._lock:
                if isinstance(body.get("sign"), str):
                    self.signs.add(body["sign"])
                if isinstance(event, FragmentInfo):
                    self.answered[event.source_key] = event.stream_id
        return answer

    # --- the end of a scenario ------------------------------------------------------

    def broadcasts(self) -> list[Broadcast]:
        """The broadcasts holding the answered fragments (following merges)."""
        with self.sessions() as session:
            ids = set(
                session.execute(
                    select(Fragment.broadcast_id).where(Fragment.source_key.in_(list(self.answered)))
                ).scalars()
            )
            found = [session.get(Broadcast, i) for i in ids if i is not None]
            while merged := [b for b in found if b is not None and b.status == "merged"]:
                found = [b for b in found if b not in merged] + [session.get(Broadcast, b.merged_into) for b in merged]
            return list({b.id: b for b in found if b is not None}.values())

    def grouped(self) -> list[Broadcast]:
        """For ``wait_for``: the broadcasts, once every answered fragment is in one (or raise)."""
        with self.sessions() as session:
            ungrouped = session.execute(
                select(func.count())
                .select_from(Fragment)
                .where(Fragment.source_key.in_(list(self.answered)), Fragment.broadcast_id.is_(None))
            ).scalar_one()
        broadcasts = self.broadcasts()
        if ungrouped or not broadcasts:
            raise RuntimeError(f"{ungrouped} fragments not grouped yet")
        return broadcasts

    def finished(self) -> list[Broadcast]:
        """For ``wait_for``: the broadcasts, once all are final (or raise)."""
        broadcasts = self.grouped()
        if any(b.status not in FINAL for b in broadcasts):
            raise RuntimeError(f"not yet: {[(b.id, b.status, b.error) for b in broadcasts]}")
        return broadcasts

    def audit(
        self, *, outcome: str | None = "archived", reason: str | None = None, versions: int = 1
    ) -> list[Broadcast]:
        """Count and check everything this scenario was answered for; fail the test on any loss.

        ``outcome``: every broadcast ``archived``, or ``failed`` (with ``reason``), or ``final``
        (either, a failure always with a reason); None checks the fragments only.
        """
        with self.sessions() as session:
            rows = list(session.execute(select(Fragment).where(Fragment.source_key.in_(list(self.answered)))).scalars())
        per_key = Counter(f.source_key for f in rows)
        self.count("fragments", len(per_key))
        self.lost += [f"fragment {key} answered 200 but not stored" for key in self.answered if key not in per_key]
        self.duplicated += [f"fragment {key} stored {n} times" for key, n in per_key.items() if n > 1]
        broadcasts = self.broadcasts() if outcome else []
        for broadcast in broadcasts:
            if outcome == "archived" or (outcome == "final" and broadcast.status != "failed"):
                self._check_archived(broadcast, versions)
            elif broadcast.status != "failed" or not broadcast.error or (reason and reason not in broadcast.error):
                self.lost.append(f"{broadcast.id} is {broadcast.status} ({broadcast.error}), not failed: {reason}")
        self.count("lost", len(self.lost))
        self.count("duplicated", len(self.duplicated))
        assert not self.lost and not self.duplicated, {"lost": self.lost, "duplicated": self.duplicated}
        return broadcasts

    def _check_archived(self, broadcast: Broadcast, versions: int) -> None:
        with self.sessions() as session:
            archives = list(session.execute(select(Archive).filter_by(broadcast_id=broadcast.id)).scalars())
        if broadcast.status != "archived" or not archives:
            self.lost.append(f"{broadcast.id} is {broadcast.status} ({broadcast.error}), not archived")
            return
        if len({a.version for a in archives}) > versions:
            self.duplicated.append(f"{broadcast.id} archived as {len({a.version for a in archives})} versions")
        for archive in archives:
            assert SAFE_KEY.fullmatch(archive.key) and not {".", ".."} & set(archive.key.split("/")), archive.key
            stored = self.store.exists(archive.key)
            if stored is None or (stored.size, stored.sha256) != (archive.size, archive.sha256):
                self.lost.append(f"{broadcast.id}: archive {archive.key} is {stored}, recorded {archive.size} B")
            else:
                self.count("archives")
        folder = archives[0].key.rsplit("/", 1)[0]
        objects = {k for k in stored_keys(self.store, folder) if k.rsplit("/", 1)[-1].startswith(f"{broadcast.id}-v")}
        known = {a.key for a in archives} | {a.manifest_key for a in archives}
        self.duplicated += [f"{broadcast.id}: stray object {key}" for key in sorted(objects - known)]


def stored_keys(store: ArchiveStore, folder: str) -> set[str]:
    """Every object key under ``folder`` in the store."""
    if isinstance(store, S3Store):
        pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=f"{folder}/")
        return {item["Key"] for page in pages for item in page.get("Contents", [])}
    root = store.local_path(folder)
    assert root is not None
    return {f"{folder}/{p.relative_to(root)}" for p in root.rglob("*") if p.is_file()} if root.exists() else set()
