"""The API service (port 3001): sign-in, devices, telemetry, reads, alerts, API keys, retention.

`create_app(config)` builds a Flask app with one flask-smorest blueprint per resource (their
schemas generate `/api/openapi.json`); handlers parse, call a use case of `tenant_app.services`
and let `api.http` map its errors. The services the app needs (connection pool, license monitor,
broker admin, background jobs) live in `app.extensions["iotistic"]`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import flask_smorest
from flask import Flask, g, request
from psycopg_pool import ConnectionPool

from licensing import KeySource
from tenant_app import services
from tenant_app.api import alerts, devices, health, keys, readings, schemas, security, telemetry
from tenant_app.api.http import guard_request_text, register_error_handlers
from tenant_app.config import Settings
from tenant_app.db import open_pool, wait_for_database
from tenant_app.dynsec import DynsecAdmin
from tenant_app.jobs import Periodic
from tenant_app.license_state import LicenseMonitor, key_source
from tenant_app.retention import PurgeResult
from tenant_app.usage import RequestCounter
from tenant_app.web import JsonProvider

log = logging.getLogger("tenant_app.api")
API_VERSION = "1.0"


class TenantApi(flask_smorest.Api):
    """flask-smorest, documenting errors as this API answers them: `{"error": "..."}`."""

    ERROR_SCHEMA = schemas.Error


@dataclass
class ApiServices:
    """Everything the request handlers use, built once per app."""

    settings: Settings
    pool: ConnectionPool
    license: LicenseMonitor
    instance: services.Instance
    requests: RequestCounter
    jobs: list[Periodic] = field(default_factory=list)
    last_retention: PurgeResult | None = None

    def run_retention(self) -> PurgeResult | None:
        result = services.run_retention(self.instance)
        if result is not None:
            self.last_retention = result
        return result

    def close(self) -> None:
        """Stop the background jobs (flushing request counts) and close the pool."""
        for job in self.jobs:
            job.stop()
        self.pool.close()


def _access_keys(settings: Settings) -> KeySource | None:
    try:
        return key_source(settings)
    except (OSError, ValueError) as e:
        log.error("public key unusable: access tokens cannot be verified", extra={"error": str(e)})
        return None


def create_app(
    config: Settings | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    background_jobs: bool = True,
) -> Flask:
    """Build the API app from `config` (default: the environment).

    Waits (with a log line per attempt) until the database answers, so a pod started before its
    database never crash-loops.
    """
    settings = config or Settings.from_env()
    clock = clock or (lambda: datetime.now(UTC))
    wait_for_database(settings.database_url, max_delay=settings.startup_retry_max_seconds)
    pool = open_pool(settings.database_url, name="api")
    monitor = LicenseMonitor.from_settings(settings, clock=clock)
    dynsec = (
        DynsecAdmin(
            settings.mqtt_host, settings.mqtt_port, settings.mqtt_admin_username, settings.mqtt_admin_password
        )
        if settings.mqtt_admin_username
        else None
    )
    instance = services.Instance(
        customer_id=settings.customer_id,
        connect=pool.connection,
        license=monitor.current,
        clock=clock,
        broker=services.BrokerAddress(
            settings.mqtt_public_host, settings.mqtt_public_port, settings.mqtt_websocket_url
        ),
        accounts=dynsec,
        access_keys=_access_keys(settings),
        issuer=settings.license_issuer,
        dead_letter_max_rows=settings.dead_letter_max_rows,
    )
    svc = ApiServices(
        settings=settings,
        pool=pool,
        license=monitor,
        instance=instance,
        requests=RequestCounter(pool.connection),
    )
    if background_jobs:
        svc.jobs = [
            Periodic("retention", svc.run_retention, settings.retention_interval_seconds).start(),
            Periodic(
                "usage-flush", svc.requests.flush, settings.usage_flush_seconds, run_at_stop=True
            ).start(),
        ]

    app = Flask(__name__)
    app.json = JsonProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Iotistic instance API",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "components": {
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "an access token from the billing login, or an API key (iotk_...)",
                    },
                    "device": {"type": "http", "scheme": "basic", "description": "device id and password"},
                }
            },
            "security": [{"bearer": []}],
        },
    )
    app.extensions["iotistic"] = svc
    app.url_map.converters["row_id"] = schemas.RowId
    api = TenantApi(app)
    api.register_converter(schemas.RowId, schemas.row_id_schema)
    api.spec.components.schema("ReadingIn", schema=schemas.ReadingIn)
    for bp in (health.bp, devices.bp, telemetry.bp, readings.bp, alerts.bp, keys.bp):
        api.register_blueprint(bp)
    register_error_handlers(app)
    _register_request_log(app, svc)
    app.before_request(guard_request_text)  # hostile text is refused before anything reads it
    security.register(app)
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
                    "path": request.path[:200],
                    "status": response.status_code,
                    "duration_ms": round(
                        (time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1
                    ),
                },
            )
        return response
