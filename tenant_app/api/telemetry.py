"""`POST /api/sensor-data` (readings over HTTP, the Node-RED path) and `GET /api/dead-letters`."""

from __future__ import annotations

from tenant_app import services
from tenant_app.api import schemas
from tenant_app.api.context import instance
from tenant_app.api.http import Blueprint, json_body
from tenant_app.api.security import principal

bp = Blueprint("telemetry", __name__, url_prefix="/api", description="Readings over HTTP, dead letters")

_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/ReadingIn"},
                    {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/ReadingIn"},
                        "minItems": 1,
                        "maxItems": services.MAX_BATCH,
                    },
                ]
            }
        }
    },
}


@bp.post("/sensor-data")
@bp.doc(requestBody=_BODY)
@bp.response(201, schemas.IngestResult)
def ingest():
    """Store one reading or a list, all or none: the first invalid one answers 400 naming it.

    People and API keys name the device in each reading; a device (Basic auth with its MQTT
    credentials) may send only its own readings.
    """
    result = services.ingest_readings(instance(), json_body(), as_device=principal().device_id)
    return {"stored": result.stored, "duplicates": result.duplicates, "alerts": result.alerts}


@bp.get("/dead-letters")
@bp.arguments(schemas.LimitArgs, location="query")
@bp.response(200, schemas.DeadLetters)
def dead_letters(args: dict):
    """Messages the MQTT consumer could not store, newest first, with the reason."""
    return services.dead_letters(instance(), args["limit"])
