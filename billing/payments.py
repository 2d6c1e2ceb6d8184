"""Stripe, behind the few calls billing makes: customers, Checkout Sessions, webhooks, cancellation.

`StripeGateway` speaks to Stripe (or to stripe-mock through STRIPE_API_BASE). Webhooks are verified
on the raw request body exactly as Stripe signs them (`Stripe-Signature: t=...,v1=...`). Turning a
verified event into a `StripeChange` for the domain rules is a plain function (`read_event`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import stripe

from billing.domain import StripeChange


class PaymentError(Exception):
    """Stripe refused or could not be reached; the message is safe to show."""


class InvalidWebhook(Exception):
    """A webhook without a valid, recent signature or with a body that is not an event."""


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


class PaymentGateway(Protocol):
    def create_customer(self, *, email: str, customer_id: str) -> str: ...

    def create_checkout_session(
        self,
        *,
        stripe_customer_id: str,
        price: str,
        success_url: str,
        cancel_url: str,
        customer_id: str,
        plan: str,
    ) -> CheckoutSession: ...

    def cancel_subscription(self, subscription_id: str) -> None: ...

    def verify_webhook(self, raw_body: bytes, signature: str | None) -> dict: ...


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class StripeGateway:
    """The real thing, through stripe-python's client (no global state)."""

    def __init__(
        self, secret_key: str, webhook_secret: str, api_base: str = "", tolerance: int = 300
    ) -> None:
        self._client = stripe.StripeClient(
            secret_key or "sk_test_unset",
            base_addresses={"api": api_base} if api_base else {},
            max_network_retries=2,
        )
        self._configured = bool(secret_key)
        self._webhook_secret = webhook_secret
        self._tolerance = tolerance

    def _call(self, what: str, fn, params: dict):
        if not self._configured:
            raise PaymentError("payments are not configured (STRIPE_SECRET_KEY is not set)")
        try:
            return fn(params=params)
        except stripe.StripeError as e:
            message = e.user_message or type(e).__name__
            raise PaymentError(f"Stripe could not {what}: {message}") from None

    def create_customer(self, *, email: str, customer_id: str) -> str:
        created = self._call(
            "create the customer",
            self._client.v1.customers.create,
            {"email": email, "metadata": {"customer_id": customer_id}},
        )
        return created.id

    def create_checkout_session(
        self,
        *,
        stripe_customer_id: str,
        price: str,
        success_url: str,
        cancel_url: str,
        customer_id: str,
        plan: str,
    ) -> CheckoutSession:
        metadata = {"customer_id": customer_id, "plan": plan}
        session = self._call(
            "create the checkout session",
            self._client.v1.checkout.sessions.create,
            {
                "mode": "subscription",
                "customer": stripe_customer_id,
                "line_items": [{"price": price, "quantity": 1}],
                "success_url": success_url,
                "cancel_url": cancel_url,
                "client_reference_id": customer_id,
                "metadata": metadata,
                "subscription_data": {"metadata": metadata},
            },
        )
        return CheckoutSession(session.id, session.url or "")

    def cancel_subscription(self, subscription_id: str) -> None:
        self._call(
            "cancel the subscription",
            lambda params: self._client.v1.subscriptions.cancel(subscription_id, params=params),
            {},
        )

    def verify_webhook(self, raw_body: bytes, signature: str | None) -> dict:
        """The event as a dict, when `signature` proves Stripe sent `raw_body` recently."""
        if not self._webhook_secret:
            raise InvalidWebhook("webhooks are not configured (STRIPE_WEBHOOK_SECRET is not set)")
        if not signature:
            raise InvalidWebhook("missing Stripe-Signature header")
        try:
            stripe.WebhookSignature.verify_header(
                raw_body.decode("utf-8"), signature, self._webhook_secret, self._tolerance
            )
        except UnicodeDecodeError:
            raise InvalidWebhook("the body is not UTF-8") from None
        except stripe.SignatureVerificationError as e:
            raise InvalidWebhook(f"invalid Stripe-Signature: {e.user_message or e}") from None
        return parse_event(raw_body)


def parse_event(raw_body: bytes) -> dict:
    """A verified body as an event dict: an object with a string `id`, `type` and integer `created`."""
    try:
        event = json.loads(raw_body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidWebhook("the body is not a JSON event") from None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created"), int)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    ):
        raise InvalidWebhook("the body is not a Stripe event (id, type, created, data.object)")
    return event


# --- reading events --------------------------------------------------------------------------------
HANDLED = {
    "checkout.session.completed": "checkout_completed",
    "invoice.paid": "invoice_paid",
    "invoice.payment_failed": "payment_failed",
    "customer.subscription.updated": "updated",
    "customer.subscription.deleted": "deleted",
}


def _ts(value: object) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and value > 0 else None


def _str(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):  # an expanded object
        return value["id"]
    return None


@dataclass(frozen=True)
class EventFacts:
    """Who an event is about, and what it says (None for event types billing ignores)."""

    stripe_customer_id: str | None
    customer_id: str | None  # our id, from metadata / client_reference_id when present
    change: StripeChange | None


def read_event(event: dict, plan_of_price: dict[str, str]) -> EventFacts:
    """Stripe's JSON for the five handled event types → the facts the rules need."""
    kind = HANDLED.get(event["type"])
    obj = event["data"]["object"]
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    customer_id = _str(metadata.get("customer_id")) or _str(obj.get("client_reference_id"))
    stripe_customer = _str(obj.get("customer"))
    if kind is None:
        return EventFacts(stripe_customer, customer_id, None)
    created = _ts(event["created"]) or datetime.now(UTC)
    subscription_id = (
        _str(obj.get("subscription")) if kind != "updated" and kind != "deleted" else _str(obj.get("id"))
    )
    plan = _str(metadata.get("plan"))
    period_start = period_end = None
    status = None
    if kind == "invoice_paid":
        lines = (obj.get("lines") or {}).get("data") or []
        line = lines[0] if lines and isinstance(lines[0], dict) else {}
        period = line.get("period") if isinstance(line.get("period"), dict) else {}
        period_start, period_end = _ts(period.get("start")), _ts(period.get("end"))
        plan = plan or plan_of_price.get(_price_of(line) or "")
    elif kind in ("updated", "deleted"):
        status = _str(obj.get("status"))
        items = (obj.get("items") or {}).get("data") or []
        item = items[0] if items and isinstance(items[0], dict) else {}
        plan = plan or plan_of_price.get(_price_of(item) or "")
        # Newer API versions put the period on the item, older ones on the subscription.
        period_start = _ts(item.get("current_period_start")) or _ts(obj.get("current_period_start"))
        period_end = _ts(item.get("current_period_end")) or _ts(obj.get("current_period_end"))
    return EventFacts(
        stripe_customer,
        customer_id,
        StripeChange(kind, created, subscription_id, plan, status, period_start, period_end),
    )


def _price_of(item: dict) -> str | None:
    price = item.get("price")
    if isinstance(price, dict):
        return _str(price.get("id"))
    pricing = item.get("pricing")
    if isinstance(pricing, dict) and isinstance(pricing.get("price_details"), dict):
        return _str(pricing["price_details"].get("price"))
    return _str(price)
