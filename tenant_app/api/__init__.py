"""The API service (port 3001): license checks, devices, telemetry, reads, alerts, retention.

`create_app(config)` builds a Flask app with one blueprint per resource; the services it needs
(connection pool, license monitor, broker admin, background jobs) live in `app.extensions`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider
from psycopg_pool import ConnectionPool

from tenant_app.api import alerts, devices, health, readings, telemetry
from tenant_app.api.errors import register_error_handlers
from tenant_app.config import Settings
from tenant_app.db import ensure_schema, open_pool
from tenant_app.dynsec import DynsecAdmin
from tenant_app.jobs import Periodic
from tenant_app.license_state import LicenseMonitor
from tenant_app.retention import RetentionJob
from tenant_app.usage import RequestCounter

log = logging.getLogger("tenant_app.api")


class JsonProvider(DefaultJSONProvider):
    """ISO 8601 for datetimes (Flask's default is the HTTP date format)."""

    @staticmethod
    def default(o):
        if isinstance(o, datetime):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


@dataclass
class ApiServices:
    """Everything the request handlers use, built once per app."""

    settings: Settings
    pool: ConnectionPool
    license: LicenseMonitor
    dynsec: DynsecAdmin | None
    requests: RequestCounter
    retention: RetentionJob
    clock: Callable[[], datetime]
    jobs: list[Periodic] = field(default_factory=list)

    def close(self) -> None:
        """Stop the background jobs (flushing request counts) and close the pool."""
        for job in self.jobs:
            job.stop()
        self.pool.close()


def create_app(
    config: Settings | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    background_jobs: bool = True,
) -> Flask:
    """Build the API app from `config` (default: the environment)."""
    settings = config or Settings.from_env()
    clock = clock or (lambda: datetime.now(UTC))
    ensure_schema(settings.database_url)
    pool = open_pool(settings.database_url, name="api")
    monitor = LicenseMonitor.from_settings(settings, clock=clock)
    dynsec = (
        DynsecAdmin(
            settings.mqtt_host, settings.mqtt_port, settings.mqtt_admin_username, settings.mqtt_admin_password
        )
        if settings.mqtt_admin_username
        else None
    )

    def current_license():
        return monitor.current().license

    svc = ApiServices(
        settings=settings,
        pool=pool,
        license=monitor,
        dynsec=dynsec,
        requests=RequestCounter(pool.connection),
        retention=RetentionJob(pool.connection, current_license, clock),
        clock=clock,
    )
    if background_jobs:
        svc.jobs = [
            Periodic("retention", svc.retention.run_once, settings.retention_interval_seconds).start(),
            Periodic(
                "usage-flush", svc.requests.flush, settings.usage_flush_seconds, run_at_stop=True
            ).start(),
        ]

    app = Flask(__name__)
    app.json = JsonProvider(app)
    app.extensions["iotistic"] = svc
    for bp in (health.bp, devices.bp, telemetry.bp, readings.bp, alerts.bp):
        app.register_blueprint(bp)
    register_error_handlers(app)
    _register_request_log(app, svc)
    state = monitor.current()
    log.info("api ready", extra={"customer_id": settings.customer_id, "license_state": state.state})
    return app


def _register_request_log(app: Flask, svc: ApiServices) -> None:
    @app.before_request
    def start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response):
        if request.path != "/health":  # probes would drown the log and the usage count
            svc.requests.increment()
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(
                        (time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1
                    ),
                },
            )
        return response
