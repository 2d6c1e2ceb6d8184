"""`/api/alerts`: threshold rules (create, list, delete) and the alert history."""

from __future__ import annotations

from tenant_app import services
from tenant_app.api import schemas
from tenant_app.api.context import instance
from tenant_app.api.http import Blueprint

bp = Blueprint("alerts", __name__, url_prefix="/api/alerts", description="Threshold alerts")


@bp.get("")
@bp.arguments(schemas.AlertHistoryArgs, location="query")
@bp.response(200, schemas.AlertHistory)
def history(args: dict):
    """Alert events, newest first."""
    return {"alerts": services.alert_history(instance(), args["device_id"], args["limit"])}


@bp.get("/rules")
@bp.response(200, schemas.RuleList)
def list_rules():
    return {"rules": services.list_rules(instance())}


@bp.post("/rules")
@bp.arguments(schemas.RuleCreate)
@bp.response(201, schemas.RuleOne)
def create_rule(body: dict):
    """Create a rule (within the plan's maxAlertRules)."""
    return {"rule": services.create_rule(instance(), body)}


@bp.delete("/rules/<row_id:rule_id>")
@bp.response(204)
def delete_rule(rule_id: int):
    services.delete_rule(instance(), rule_id)
    return ""
