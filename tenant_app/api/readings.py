"""Reads: a device's readings over a time range (downsampled when long), latest per device, CSV."""

from __future__ import annotations

from flask import Response, stream_with_context

from tenant_app import services
from tenant_app.api import schemas
from tenant_app.api.context import instance
from tenant_app.api.http import Blueprint

bp = Blueprint("readings", __name__, url_prefix="/api", description="Readings")


@bp.get("/devices/<device_id>/readings")
@bp.arguments(schemas.ReadingsArgs, location="query")
@bp.response(200, schemas.DeviceReadings)
def device_readings(args: dict, device_id: str):
    """Raw rows when they fit in `max_points`, else averages over equal time buckets."""
    return services.device_readings(instance(), device_id, args["from_"], args["to"], args["max_points"])


@bp.get("/readings/latest")
@bp.response(200, schemas.LatestReadings)
def latest():
    return {"readings": services.latest_readings(instance())}


@bp.get("/devices/<device_id>/readings.csv")
@bp.arguments(schemas.RangeArgs, location="query")
@bp.response(200, content_type="text/csv")
def export_csv(args: dict, device_id: str):
    """Every reading in the range as CSV, streamed (no row limit, no downsampling)."""
    chunks = services.export_csv(instance(), device_id, args["from_"], args["to"])
    headers = {"Content-Disposition": f'attachment; filename="{device_id}.csv"'}
    return Response(stream_with_context(chunks), mimetype="text/csv", headers=headers)
