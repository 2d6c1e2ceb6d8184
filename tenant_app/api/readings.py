"""Reads: a device's readings over a time range (downsampled when long), latest per device, CSV."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from flask import Blueprint, Response, jsonify, stream_with_context

from licensing.plans import DATA_EXPORT, HISTORY
from tenant_app import store
from tenant_app.api.context import int_arg, now, readable, requires, services, time_arg
from tenant_app.api.errors import ApiError
from tenant_app.downsampling import (
    DEFAULT_MAX_POINTS,
    MAX_POINTS_LIMIT,
    InvalidRange,
    bucket_seconds,
    check_range,
)
from tenant_app.readings import METRICS

bp = Blueprint("readings", __name__, url_prefix="/api")
DEFAULT_RANGE = timedelta(hours=24)


def _range():
    end = time_arg("to", now())
    start = time_arg("from", end - DEFAULT_RANGE)
    return start, end


def _require_device(conn, device_id: str) -> None:
    if store.get_device(conn, device_id) is None:
        raise ApiError(404, f"no device {device_id!r}")


@bp.get("/devices/<device_id>/readings")
@requires(readable, HISTORY)
def device_readings(device_id: str):
    """Raw rows when they fit in `max_points`, else averages over equal time buckets."""
    start, end = _range()
    max_points = int_arg("max_points", DEFAULT_MAX_POINTS, 2, MAX_POINTS_LIMIT)
    try:
        check_range(start, end, max_points)
    except InvalidRange as e:
        raise ApiError(400, str(e)) from None
    with services().pool.connection() as conn:
        _require_device(conn, device_id)
        count = store.count_readings(conn, device_id, start, end, max_points + 1)
        bucket = bucket_seconds(start, end, count, max_points)
        if bucket is None:
            rows = store.readings_raw(conn, device_id, start, end, max_points)
        else:
            rows = store.readings_bucketed(conn, device_id, start, end, bucket)
    return jsonify(
        device_id=device_id,
        **{"from": start.isoformat(), "to": end.isoformat()},
        bucket_seconds=bucket,
        readings=rows,
    )


@bp.get("/readings/latest")
@requires(readable)
def latest():
    with services().pool.connection() as conn:
        return jsonify(readings=store.latest_per_device(conn))


@bp.get("/devices/<device_id>/readings.csv")
@requires(readable, DATA_EXPORT)
def export_csv(device_id: str):
    """Every reading in the range as CSV, streamed (no row limit, no downsampling)."""
    start, end = _range()
    if end <= start:
        raise ApiError(400, "'to' must be after 'from'")
    pool = services().pool
    with pool.connection() as conn:
        _require_device(conn, device_id)

    def rows():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["timestamp", *METRICS])
        with pool.connection() as conn:
            for i, row in enumerate(store.iter_readings(conn, device_id, start, end)):
                writer.writerow([row[0].isoformat(), *("" if v is None else v for v in row[1:])])
                if i % 1000 == 999:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    headers = {"Content-Disposition": f'attachment; filename="{device_id}.csv"'}
    return Response(stream_with_context(rows()), mimetype="text/csv", headers=headers)
