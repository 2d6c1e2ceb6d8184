"""`/api/alerts`: threshold rules (create, list, delete) and the alert history."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from licensing.plans import ALERTS, MAX_ALERT_RULES
from tenant_app import store
from tenant_app.alerts import InvalidRule, validate_rule
from tenant_app.api.context import int_arg, json_body, readable, requires, services, writable
from tenant_app.api.errors import ApiError
from tenant_app.license_state import LicenseDenied, require_feature

bp = Blueprint("alerts", __name__, url_prefix="/api/alerts")


@bp.get("")
@requires(readable, ALERTS)
def history():
    device_id = request.args.get("device_id") or None
    limit = int_arg("limit", 100, 1, 1000)
    with services().pool.connection() as conn:
        return jsonify(alerts=store.alert_history(conn, device_id, limit))


@bp.get("/rules")
@requires(readable, ALERTS)
def list_rules():
    with services().pool.connection() as conn:
        return jsonify(rules=store.list_rules(conn))


@bp.post("/rules")
def create_rule():
    lic = writable()
    require_feature(lic, ALERTS)
    try:
        fields = validate_rule(json_body())
    except InvalidRule as e:
        raise ApiError(400, str(e)) from None
    with services().pool.connection() as conn, conn.transaction():
        limit = lic.limit(MAX_ALERT_RULES)
        if limit is not None and store.count_rules(conn) >= limit:
            raise LicenseDenied(403, f"alert rule limit reached: the {lic.plan} plan allows {limit} rules")
        rule = store.insert_rule(conn, fields)
    return jsonify(rule=rule), 201


@bp.delete("/rules/<int:rule_id>")
@requires(writable, ALERTS)
def delete_rule(rule_id: int):
    with services().pool.connection() as conn, conn.transaction():
        if not store.delete_rule(conn, rule_id):
            raise ApiError(404, f"no alert rule {rule_id}")
    return "", 204
