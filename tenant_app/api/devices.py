"""`/api/devices`: register (with MQTT credentials), list, show and delete devices."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from tenant_app import license_state, store
from tenant_app.api.context import json_body, readable, requires, services, writable
from tenant_app.api.errors import ApiError
from tenant_app.config import TELEMETRY_TOPIC
from tenant_app.dynsec import DynsecError
from tenant_app.readings import InvalidReading, validate_device_id

bp = Blueprint("devices", __name__, url_prefix="/api/devices")
log = logging.getLogger(__name__)


@bp.get("")
@requires(readable)
def list_devices():
    with services().pool.connection() as conn:
        return jsonify(devices=store.list_devices(conn))


@bp.post("")
def register():
    """Create the device row and its broker account together; either both exist or neither."""
    lic = writable()
    data = json_body()
    if not isinstance(data, dict):
        raise ApiError(400, 'send a JSON object like {"id": "greenhouse-1", "name": "..."}')
    try:
        device_id = validate_device_id(data.get("id"))
    except InvalidReading as e:
        raise ApiError(400, f"'id': {e}") from None
    name = data.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise ApiError(400, "'name' must be a string of at most 200 characters")
    svc = services()
    if svc.dynsec is None:
        raise ApiError(503, "device registration is unavailable: no MQTT admin account is configured")
    account_created = False
    try:
        with svc.pool.connection() as conn, conn.transaction():
            store.lock_devices(conn)  # held until commit: concurrent registrations count one by one
            license_state.check_device_limit(lic, store.count_devices(conn))
            row = store.insert_device(conn, device_id, name)
            if row is None:
                raise ApiError(409, f"device {device_id!r} is already registered")
            try:
                password = svc.dynsec.create_device(device_id)
                account_created = True
            except DynsecError as e:
                raise ApiError(502, f"the MQTT broker did not create the device account: {e}") from None
    except Exception:
        # Rolled back: remove the account too, so no half-registered device remains.
        if account_created:
            _cleanup_account(device_id)
        raise
    log.info("device registered", extra={"device_id": device_id})
    topic = TELEMETRY_TOPIC.format(device_id=device_id)
    return (
        jsonify(
            device=row,
            mqtt={
                "host": svc.settings.mqtt_public_host,
                "port": svc.settings.mqtt_public_port,
                "username": device_id,
                "password": password,
                "topic": topic,
                "qos": 1,
            },
        ),
        201,
    )


def _cleanup_account(device_id: str) -> None:
    try:
        services().dynsec.delete_device(device_id)
    except DynsecError:
        log.warning("could not remove a half-created device account", extra={"device_id": device_id})


@bp.get("/<device_id>")
@requires(readable)
def show(device_id: str):
    with services().pool.connection() as conn:
        row = store.get_device(conn, device_id)
    if row is None:
        raise ApiError(404, f"no device {device_id!r}")
    return jsonify(device=row)


@bp.delete("/<device_id>")
@requires(writable)
def delete(device_id: str):
    """Revoke the broker account first (the device can no longer publish), then delete the rows."""
    svc = services()
    with svc.pool.connection() as conn:
        if store.get_device(conn, device_id) is None:
            raise ApiError(404, f"no device {device_id!r}")
    if svc.dynsec is not None:
        try:
            svc.dynsec.delete_device(device_id)
        except DynsecError as e:
            raise ApiError(502, f"the MQTT broker did not remove the device account: {e}") from None
    with svc.pool.connection() as conn, conn.transaction():
        store.delete_device(conn, device_id)
    log.info("device deleted", extra={"device_id": device_id})
    return "", 204
