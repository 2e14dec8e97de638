"""GET /metrics for Prometheus: the state of the work, read from the database on each scrape.

Counted from the database rather than in-process counters, the figures are the
same whichever web process answers the scrape, and survive restarts.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from recorder.api.auth import require_token
from recorder.app import services
from recorder.services import Services
from recorder.store.models import Archive, Broadcast, Event, Fragment, Job

bp = Blueprint("metrics", __name__)


class StoreCollector(Collector):
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.svc.sessions() as session:
            by_status = GaugeMetricFamily("recorder_broadcasts", "Broadcasts by status", labels=["status"])
            for status, count in session.execute(select(Broadcast.status, func.count()).group_by(Broadcast.status)):
                by_status.add_metric([status], count)
            yield by_status
            unhandled = session.execute(
                select(func.count(), func.min(Event.received_at)).where(Event.handled_at.is_(None))
            ).one()
            yield GaugeMetricFamily("recorder_events_unhandled", "Stored callbacks not yet handled", value=unhandled[0])
            yield GaugeMetricFamily(
                "recorder_events_unhandled_oldest_timestamp_seconds",
                "When the oldest unhandled callback arrived (0: none)",
                value=unhandled[1] or 0,
            )
            total = session.execute(select(func.count()).select_from(Event)).scalar_one()
            yield GaugeMetricFamily("recorder_events", "Stored callbacks", value=total)
            fragments = session.execute(select(func.count()).select_from(Fragment)).scalar_one()
            yield GaugeMetricFamily("recorder_fragments", "Stored fragments", value=fragments)
            archives = session.execute(select(func.count(), func.coalesce(func.sum(Archive.size), 0))).one()
            yield GaugeMetricFamily("recorder_archives", "Archives stored (all versions)", value=archives[0])
            yield GaugeMetricFamily("recorder_archive_bytes", "Bytes of archives stored", value=int(archives[1]))
            jobs = GaugeMetricFamily("recorder_jobs", "Jobs by stored status", labels=["status"])
            for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
                jobs.add_metric([status], count)
            yield jobs


@bp.get("/metrics")
@require_token()  # Prometheus sends it with `authorization: {credentials: <read token>}`
def metrics() -> Response:
    registry = CollectorRegistry()
    registry.register(StoreCollector(services()))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4; charset=utf-8")
