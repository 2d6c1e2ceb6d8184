"""`/api/devices`: register (with MQTT credentials), list, show and delete devices."""

from __future__ import annotations

from tenant_app import services
from tenant_app.api import schemas
from tenant_app.api.context import instance
from tenant_app.api.http import Blueprint

bp = Blueprint(
    "devices", __name__, url_prefix="/api/devices", description="Devices and their broker accounts"
)


@bp.get("")
@bp.response(200, schemas.DeviceList)
def list_devices():
    """Devices with the time of their latest reading."""
    return {"devices": services.list_devices(instance())}


@bp.post("")
@bp.arguments(schemas.DeviceCreate)
@bp.response(201, schemas.DeviceRegistered)
def register(body: dict):
    """Register a device and create its broker account; the password is shown once."""
    reg = services.register_device(instance(), body["id"], body["name"])
    return {"device": reg.device, "mqtt": reg.credentials}


@bp.get("/<device_id>")
@bp.response(200, schemas.DeviceOne)
def show(device_id: str):
    return {"device": services.get_device(instance(), device_id)}


@bp.delete("/<device_id>")
@bp.response(204)
def delete(device_id: str):
    """Revoke the device's broker account, then delete it and its readings."""
    services.delete_device(instance(), device_id)
    return ""
