"""`POST /api/sensor-data`: readings over HTTP (the Node-RED path), one object or a list."""

from __future__ import annotations

from flask import Blueprint, jsonify

from licensing.plans import HTTP_INGESTION
from tenant_app import store
from tenant_app.api.context import int_arg, json_body, now, readable, requires, services, writable
from tenant_app.api.errors import ApiError
from tenant_app.ingest import store_readings
from tenant_app.readings import InvalidReading, validate_reading

bp = Blueprint("telemetry", __name__, url_prefix="/api")
MAX_BATCH = 5000


@bp.post("/sensor-data")
@requires(writable, HTTP_INGESTION)
def ingest():
    """Store all readings or none: any invalid one answers 400 naming its index and field."""
    data = json_body()
    items = data if isinstance(data, list) else [data]
    if not items or len(items) > MAX_BATCH:
        raise ApiError(400, f"send between 1 and {MAX_BATCH} readings")
    t = now()
    readings = []
    for i, item in enumerate(items):
        try:
            readings.append(validate_reading(item, now=t))
        except InvalidReading as e:
            raise ApiError(400, f"reading {i}: {e}" if len(items) > 1 else str(e)) from None
    with services().pool.connection() as conn, conn.transaction():
        unknown = {r.device_id for r in readings} - store.known_devices(conn, (r.device_id for r in readings))
        if unknown:
            raise ApiError(422, f"unknown device(s): {', '.join(sorted(unknown))}; register them first")
        result = store_readings(conn, readings)
    return jsonify(stored=result.stored, duplicates=result.duplicates, alerts=result.alerts), 201


@bp.get("/dead-letters")
@requires(readable)
def dead_letters():
    """Messages the MQTT consumer could not store, newest first, with the reason."""
    limit = int_arg("limit", 100, 1, 1000)
    with services().pool.connection() as conn:
        return jsonify(dead_letters=store.list_dead_letters(conn, limit), usage=store.usage(conn))
