"""`/api/subscriptions`: Stripe Checkout for a plan (the dashboard's Upgrade button)."""

from __future__ import annotations

from billing import services
from billing.api.context import billing, principal
from billing.api.parsing import ApiBlueprint
from billing.api.schemas import CheckoutIn, CheckoutOut, Error

bp = ApiBlueprint("subscriptions", __name__, url_prefix="/api/subscriptions", description="Stripe Checkout")


@bp.post("/create-checkout-session")
@bp.arguments(CheckoutIn)
@bp.response(200, CheckoutOut)
@bp.alt_response(400, schema=Error)
@bp.alt_response(401, schema=Error)
@bp.alt_response(403, schema=Error)
@bp.alt_response(502, schema=Error, description="Stripe failed")
@bp.doc(security=[{"bearer": []}])
def create_checkout_session(body: dict):
    """A subscription-mode Checkout Session. Authenticated by the customer's access token, or by
    the instance's own license (so the instance dashboard's Upgrade button works)."""
    return services.create_checkout_session(billing(), principal(allow_license=True), body)
