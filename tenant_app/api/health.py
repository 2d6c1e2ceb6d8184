"""`GET /health` (probes and operators, public) and `GET /api/license` (the dashboard's plan panel)."""

from __future__ import annotations

from flask import jsonify

from tenant_app import services
from tenant_app.api.context import instance
from tenant_app.api.context import services as api_services
from tenant_app.api.http import Blueprint

bp = Blueprint("health", __name__, description="Health and license")


@bp.get("/health")
def health():
    """200 while the database answers (503 otherwise); the license state is reported, not judged."""
    svc = api_services()
    inst = instance()
    status = svc.license.current()
    try:
        with svc.pool.connection(timeout=3) as conn:
            conn.execute("SELECT 1")
        database = "ok"
    except Exception as e:  # any failure means "not ready", with the reason shown
        database = f"unavailable: {e.__class__.__name__}"
    retention = svc.last_retention
    body = {
        "status": "ok" if database == "ok" and status.state == "valid" else "degraded",
        "customer_id": inst.customer_id,
        "database": database,
        "license": status.summary(inst.clock()),
        "retention": None
        if retention is None
        else {"cutoff": retention.cutoff.isoformat(), "deleted_readings": retention.readings},
    }
    return jsonify(body), 200 if database == "ok" else 503


@bp.get("/api/license")
def license_info():
    """The license summary: state, plan, features, limits, expiry, trial and days left."""
    return jsonify(services.license_summary(instance()))
