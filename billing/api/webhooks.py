"""`/api/webhooks/stripe`: signed Stripe events, stored once and processed by a job."""

from __future__ import annotations

from flask import request

from billing import services
from billing.api.context import billing
from billing.api.parsing import ApiBlueprint
from billing.api.schemas import Error, StripeHeaders, WebhookOut

bp = ApiBlueprint("webhooks", __name__, url_prefix="/api/webhooks", description="Stripe webhooks")


@bp.post("/stripe")
@bp.arguments(StripeHeaders, location="headers")
@bp.response(200, WebhookOut)
@bp.alt_response(400, schema=Error, description="missing, invalid or too old signature")
@bp.doc(requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}})
def stripe_webhook(headers: dict):
    """Verify `Stripe-Signature` on the raw body, store the event id, queue the work, answer fast."""
    return services.receive_stripe_webhook(
        billing(), request.get_data(cache=True), headers["stripe_signature"]
    )
