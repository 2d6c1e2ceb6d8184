"""`/api/customers`: signup, login, a customer's status, and offboarding (admin)."""

from __future__ import annotations

from billing import services
from billing.api.context import billing, principal
from billing.api.parsing import ApiBlueprint
from billing.api.schemas import CustomerOut, DeployOut, Error, LoginIn, LoginOut, SignupIn, SignupOut

bp = ApiBlueprint("customers", __name__, url_prefix="/api/customers", description="Signup, login and status")
BEARER = [{"bearer": []}]


@bp.post("/signup")
@bp.arguments(SignupIn)
@bp.response(201, SignupOut)
@bp.alt_response(400, schema=Error, description="a field breaks a rule")
@bp.alt_response(409, schema=Error, description="an account with this email exists")
def signup(body: dict):
    """Sign up: a 14-day starter trial, a license, and the instance queued for provisioning."""
    return services.signup(billing(), body)


@bp.post("/login")
@bp.arguments(LoginIn)
@bp.response(200, LoginOut)
@bp.alt_response(401, schema=Error, description="wrong email or password")
def login(body: dict):
    """A short-lived access token that the customer's own instance accepts."""
    return services.login(billing(), body)


@bp.get("/<customer_id>")
@bp.response(200, CustomerOut)
@bp.alt_response(401, schema=Error)
@bp.alt_response(403, schema=Error)
@bp.alt_response(404, schema=Error)
@bp.doc(security=BEARER)
def show(customer_id: str):
    """Status, deployment, plan, subscription and license expiry (the customer's token or admin)."""
    return services.get_customer(billing(), principal(), customer_id)


@bp.delete("/<customer_id>")
@bp.response(202, DeployOut)
@bp.alt_response(401, schema=Error)
@bp.alt_response(403, schema=Error)
@bp.alt_response(404, schema=Error)
@bp.doc(security=BEARER)
def offboard(customer_id: str):
    """Offboard (admin): destroy the stack, keep the customer and its billing history."""
    return services.offboard(billing(), principal(), customer_id)
