"""`/api/admin`: operators' endpoints (the admin token from ADMIN_TOKEN)."""

from __future__ import annotations

from billing import services
from billing.api.context import billing, principal
from billing.api.parsing import ApiBlueprint
from billing.api.schemas import CustomerList, DeployOut, Error, Page

bp = ApiBlueprint("admin", __name__, url_prefix="/api/admin", description="Operators")
BEARER = [{"bearer": []}]


@bp.get("/customers")
@bp.arguments(Page, location="query")
@bp.response(200, CustomerList)
@bp.alt_response(401, schema=Error)
@bp.alt_response(403, schema=Error)
@bp.doc(security=BEARER)
def list_customers(page: dict):
    """Every customer with its plan and deployment status, oldest first."""
    return services.list_customers(billing(), principal(), page["limit"], page["offset"])


@bp.post("/customers/<customer_id>/deploy")
@bp.response(202, DeployOut)
@bp.alt_response(401, schema=Error)
@bp.alt_response(403, schema=Error)
@bp.alt_response(404, schema=Error)
@bp.alt_response(409, schema=Error)
@bp.doc(security=BEARER)
def redeploy(customer_id: str):
    """Queue a deploy of the customer's stack (after fixing what made it fail)."""
    return services.request_deploy(billing(), principal(), customer_id)
