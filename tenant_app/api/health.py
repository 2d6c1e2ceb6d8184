"""`GET /health` (probes and operators) and `GET /api/license` (the dashboard's plan panel)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from tenant_app.api.context import now, services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """200 while the database answers (503 otherwise); the license state is reported, not judged."""
    svc = services()
    status = svc.license.current()
    try:
        with svc.pool.connection(timeout=3) as conn:
            conn.execute("SELECT 1")
        database = "ok"
    except Exception as e:  # any failure means "not ready", with the reason shown
        database = f"unavailable: {e.__class__.__name__}"
    retention = svc.retention.last_run
    body = {
        "status": "ok" if database == "ok" and status.state == "valid" else "degraded",
        "customer_id": svc.settings.customer_id,
        "database": database,
        "license": status.summary(now()),
        "retention": None
        if retention is None
        else {"cutoff": retention.cutoff.isoformat(), "deleted_readings": retention.readings},
    }
    return jsonify(body), 200 if database == "ok" else 503


@bp.get("/api/license")
def license_info():
    svc = services()
    return jsonify(svc.license.current().summary(now()))
