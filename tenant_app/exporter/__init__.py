"""The billing exporter (port 9090): usage metrics for Prometheus, computed at scrape time.

A custom collector reads the tenant database on every scrape, so the numbers are those of the
database (readings ingested, active devices, storage) and survive restarts of any service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tenant_app.config import Settings
from tenant_app.license_state import LicenseMonitor

log = logging.getLogger("tenant_app.exporter")
PREFIX = "iotistic"


class UsageCollector(Collector):
    """Yields the usage metrics of one customer instance, labelled with its customer id."""

    def __init__(
        self,
        settings: Settings,
        license_monitor: LicenseMonitor | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.license = license_monitor
        self.clock = clock

    def describe(self) -> list[Metric]:
        # Registering must not query the database; scrape-time collection does.
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["customer_id"]
        values = [self.settings.customer_id]
        up = GaugeMetricFamily(
            f"{PREFIX}_exporter_database_up",
            "1 when the tenant database answered this scrape.",
            labels=labels,
        )
        try:
            usage = self._query()
        except psycopg.Error as e:
            log.error("scrape could not read the database", extra={"error": str(e)})
            up.add_metric(values, 0)
            yield up
            yield from self._license_metrics(labels, values)
            return
        up.add_metric(values, 1)
        yield up

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
            c.add_metric(values, value)
            return c

        yield gauge("devices_registered", "Devices registered on the instance.", usage["registered"])
        yield gauge(
            "devices_active",
            f"Devices that sent a reading in the last {self.settings.active_device_window_seconds} s.",
            usage["active"],
        )
        yield counter(
            "readings_ingested", "Sensor readings stored since the instance was created.", usage["readings"]
        )
        yield counter(
            "dead_letters", "MQTT messages refused as malformed or out of range.", usage["dead_letters"]
        )
        yield counter(
            "api_requests", "Requests served by the API (health probes excluded).", usage["api_requests"]
        )
        yield gauge("storage_used_bytes", "Size of the tenant database on disk.", usage["storage"])
        yield from self._license_metrics(labels, values)

    def _query(self) -> dict:
        window = self.settings.active_device_window_seconds
        with psycopg.connect(self.settings.database_url, connect_timeout=5, autocommit=True) as conn:
            registered, active, storage = conn.execute(
                "SELECT (SELECT count(*) FROM devices), "
                "(SELECT count(*) FROM devices d WHERE EXISTS (SELECT 1 FROM sensor_readings r "
                " WHERE r.device_id = d.id AND r.timestamp > now() - make_interval(secs => %s))), "
                "pg_database_size(current_database())",
                (window,),
            ).fetchone()
            counters = dict(conn.execute("SELECT name, value FROM usage_counters").fetchall())
        return {
            "registered": registered,
            "active": active,
            "storage": storage,
            "readings": counters.get("readings_ingested", 0),
            "dead_letters": counters.get("dead_letters", 0),
            "api_requests": counters.get("api_requests", 0),
        }

    def _license_metrics(self, labels: list[str], values: list[str]) -> Iterator[Metric]:
        if self.license is None:
            return
        status = self.license.current()
        now = self.clock()
        info = GaugeMetricFamily(
            f"{PREFIX}_license_info",
            "Always 1; the labels tell the license state (valid, expired, invalid, missing) and plan.",
            labels=[*labels, "state", "plan", "trial"],
        )
        lic = status.license
        info.add_metric(
            [*values, status.state, lic.plan if lic else "", str(lic.trial).lower() if lic else "false"], 1
        )
        yield info
        if lic is not None:
            left = GaugeMetricFamily(
                f"{PREFIX}_license_remaining_seconds",
                "Seconds until the license expires (negative once expired); divide by 86400 for days left.",
                labels=labels,
            )
            left.add_metric(values, lic.seconds_left(now))
            yield left
            expiry = GaugeMetricFamily(
                f"{PREFIX}_license_expiry_timestamp_seconds",
                "When the license expires (Unix time).",
                labels=labels,
            )
            expiry.add_metric(values, lic.expires_at.timestamp())
            yield expiry


def create_app(config: Settings | None = None, *, clock: Callable[[], datetime] | None = None) -> Flask:
    """The exporter app: `GET /metrics` in the Prometheus text format."""
    settings = config or Settings.from_env()
    has_license = bool(settings.license_key or settings.license_key_file)
    monitor = LicenseMonitor.from_settings(settings, clock=clock) if has_license else None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector(settings, monitor, clock or (lambda: datetime.now(UTC))))
    app = Flask(__name__)
    app.extensions["iotistic_registry"] = registry

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app
