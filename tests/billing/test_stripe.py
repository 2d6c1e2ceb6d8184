"""Stripe: Checkout through stripe-mock, webhooks signed exactly as Stripe signs them, and what
each event does to a subscription, its license and its instance (deploys are queued, not run)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from billing import services
from billing.payments import PaymentError
from tests.billing.conftest import (
    ADMIN,
    bearer,
    jobs,
    login_token,
    post_webhook,
    rows,
    sign_webhook,
    signup,
    stripe_event,
)


def checkout(client, headers, **body):
    return client.post("/api/subscriptions/create-checkout-session", json=body, headers=headers)


def test_checkout_creates_the_stripe_customer_once_and_a_subscription_session(client, settings):
    cid = signup(client).json["customer_id"]
    token = login_token(client)
    first = checkout(client, bearer(token), plan="professional")
    assert first.status_code == 200, first.json
    assert first.json["checkoutUrl"].startswith("https://") and first.json["sessionId"]
    (stripe_customer,) = rows(settings.database_url, "SELECT stripe_customer_id FROM customers")[0]
    assert stripe_customer and stripe_customer.startswith("cus_")
    again = checkout(client, bearer(token), plan="enterprise", success_url="https://acme.example/thanks")
    assert again.status_code == 200
    assert rows(settings.database_url, "SELECT stripe_customer_id FROM customers") == [(stripe_customer,)]
    audit = rows(
        settings.database_url,
        "SELECT action, details->>'plan' FROM audit_log WHERE action = %s",
        "checkout_started",
    )
    assert audit == [("checkout_started", "professional"), ("checkout_started", "enterprise")]
    assert cid


def test_the_instance_license_proves_identity_for_checkout_only_for_its_customer(client):
    license_key = signup(client).json["license"]
    assert checkout(client, bearer(license_key), plan="professional").status_code == 200
    other = signup(client, email="it@globex.example").json["customer_id"]
    refused = checkout(client, bearer(license_key), plan="professional", customer_id=other)
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"plan": "gold"}, 400),
        ({"plan": "professional", "success_url": "javascript:alert(1)"}, 400),
        ({"plan": "professional", "cancel_url": "x" * 3000}, 400),
        ({"plan": "professional", "coupon": "FREE"}, 400),
    ],
)
def test_bad_checkout_requests_are_4xx(client, body, status):
    signup(client)
    assert checkout(client, bearer(login_token(client)), **body).status_code == status
    assert checkout(client, {}, plan="professional").status_code == 401


def test_checkout_when_stripe_fails_is_a_502_naming_stripe(billing, client):
    cid = signup(client).json["customer_id"]
    broken = replace(billing, payments=_FailingStripe())
    with pytest.raises(services.PaymentsUnavailable, match="Stripe"):
        services.create_checkout_session(
            broken, services.Principal("customer", cid), {"plan": "professional"}
        )


class _FailingStripe:
    def create_customer(self, **_):
        raise PaymentError("Stripe could not create the customer: APIConnectionError")


# --- webhooks ----------------------------------------------------------------------------------
def _paid_checkout(cid: str, created: int | None = None, plan: str = "professional") -> dict:
    obj = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "customer": "cus_test_1",
        "subscription": "sub_test_1",
        "client_reference_id": cid,
        "metadata": {"customer_id": cid, "plan": plan},
        "mode": "subscription",
    }
    return stripe_event("checkout.session.completed", obj, created)


def test_webhook_signatures_missing_invalid_or_old_are_400_and_store_nothing(client, settings):
    cid = signup(client).json["customer_id"]
    event = _paid_checkout(cid)
    body, header = sign_webhook(event)
    cases = [
        {},
        {"Stripe-Signature": "t=1,v1=deadbeef"},
        {"Stripe-Signature": header.replace("v1=", "v1=0")},
        {"Stripe-Signature": sign_webhook(event, secret="whsec_other")[1]},
        {"Stripe-Signature": sign_webhook(event, at=int(time.time()) - 3600)[1]},
    ]
    for headers in cases:
        resp = client.post(
            "/api/webhooks/stripe", data=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert resp.status_code == 400 and resp.json["error"], headers
    # A tampered body under a valid header.
    resp = client.post(
        "/api/webhooks/stripe",
        data=body.replace(b"professional", b"enterprise"),
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    assert rows(settings.database_url, "SELECT count(*) FROM webhook_events") == [(0,)]


def test_a_repeated_delivery_is_a_no_op(client, settings):
    cid = signup(client).json["customer_id"]
    event = _paid_checkout(cid)
    first = post_webhook(client, event)
    second = post_webhook(client, event)
    assert first.status_code == second.status_code == 200
    assert (first.json, second.json) == (
        {"received": True, "duplicate": False},
        {"received": True, "duplicate": True},
    )
    assert len(jobs(settings.database_url, "stripe_event")) == 1


def test_checkout_completed_activates_the_plan_issues_a_license_and_queues_a_deploy(
    billing, client, settings
):
    cid = signup(client).json["customer_id"]
    event = _paid_checkout(cid)
    assert post_webhook(client, event).status_code == 200
    assert services.process_stripe_event(billing, event["id"]) == "active professional"
    url = settings.database_url
    sub = rows(
        url, "SELECT plan, status, stripe_subscription_id FROM subscriptions WHERE customer_id = %s", cid
    )
    assert sub == [("professional", "active", "sub_test_1")]
    history = rows(
        url, "SELECT reason, plan, trial FROM license_history WHERE customer_id = %s ORDER BY id", cid
    )
    assert history == [("trial_signup", "starter", True), ("checkout_completed", "professional", False)]
    assert rows(url, "SELECT stripe_customer_id FROM customers WHERE id = %s", cid) == [("cus_test_1",)]
    # One deploy waits (the signup's): it reads the new license when it runs.
    assert [j["args"]["customer_id"] for j in jobs(url, "deploy")] == [cid]
    # Processing the same event again changes nothing.
    assert services.process_stripe_event(billing, event["id"]).startswith("already processed")
    assert len(rows(url, "SELECT 1 FROM license_history WHERE customer_id = %s", cid)) == 2


def test_events_out_of_order_never_move_the_subscription_back(billing, client, settings):
    cid = signup(client).json["customer_id"]
    now = int(time.time())
    paid = _paid_checkout(cid, created=now)
    failed_before = stripe_event(
        "invoice.payment_failed", {"customer": "cus_test_1", "subscription": "sub_test_1"}, created=now - 60
    )
    for event in (paid, failed_before):
        post_webhook(client, event)
        services.process_stripe_event(billing, event["id"])
    assert rows(settings.database_url, "SELECT status FROM subscriptions") == [("active",)]


def test_payment_failure_then_grace_end_suspends_and_a_payment_reactivates(billing, client, settings):
    cid = signup(client).json["customer_id"]
    url = settings.database_url
    now = datetime.now(UTC)
    paid = _paid_checkout(cid, created=int(now.timestamp()) - 10)
    failed = stripe_event(
        "invoice.payment_failed",
        {"customer": "cus_test_1", "subscription": "sub_test_1"},
        created=int(now.timestamp()),
    )
    for event in (paid, failed):
        post_webhook(client, event)
        services.process_stripe_event(billing, event["id"])
    assert rows(url, "SELECT status FROM subscriptions") == [("past_due",)]
    assert services.suspend_overdue(billing) == []  # still within the grace period

    later = replace(billing, clock=lambda: now + timedelta(days=8))
    assert services.suspend_overdue(later) == [cid]
    assert rows(url, "SELECT status FROM customers") == [("suspended",)]
    assert services.suspend_overdue(later) == []  # once

    invoice = stripe_event(
        "invoice.paid",
        {
            "customer": "cus_test_1",
            "subscription": "sub_test_1",
            "lines": {
                "data": [
                    {
                        "period": {
                            "start": int(now.timestamp()),
                            "end": int((now + timedelta(days=38)).timestamp()),
                        }
                    }
                ]
            },
        },
        created=int(now.timestamp()) + 5,
    )
    post_webhook(client, invoice)
    assert services.process_stripe_event(later, invoice["id"]) == "active professional (reactivated)"
    assert rows(url, "SELECT status FROM customers") == [("active",)]
    actions = [
        a for (a,) in rows(url, "SELECT action FROM audit_log WHERE customer_id = %s ORDER BY id", cid)
    ]
    assert actions.index("suspended") < actions.index("reactivated")


def test_a_trial_that_ends_unpaid_is_suspended(billing, client, settings):
    cid = signup(client).json["customer_id"]
    later = replace(billing, clock=lambda: datetime.now(UTC) + timedelta(days=15))
    assert services.suspend_overdue(later) == [cid]
    reason = rows(
        settings.database_url, "SELECT details->>'reason' FROM audit_log WHERE action = 'suspended'"
    )
    assert reason == [("the trial ended without a payment",)]


def test_events_for_unknown_customers_or_types_are_recorded_and_ignored(billing, client, settings):
    signup(client)
    for event in (
        stripe_event("invoice.paid", {"customer": "cus_nobody", "subscription": "sub_x"}),
        stripe_event("charge.refunded", {"customer": "cus_test_1"}),
    ):
        assert post_webhook(client, event).status_code == 200
        assert services.process_stripe_event(billing, event["id"]).startswith("ignored")
    assert rows(
        settings.database_url, "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL"
    ) == [(2,)]


def test_admin_can_check_out_for_any_customer_and_needs_to_name_it(client):
    cid = signup(client).json["customer_id"]
    assert checkout(client, ADMIN, plan="professional", customer_id=cid).status_code == 200
    assert checkout(client, ADMIN, plan="professional").status_code == 400


def test_a_stripe_customer_already_bound_to_another_account_is_a_502_not_a_500(billing, client, settings):
    """Stripe never hands one customer id to two accounts; if it ever did, the checkout says so."""
    first = signup(client).json["customer_id"]
    second = signup(client, email="it@globex.example").json["customer_id"]
    same_id = replace(billing, payments=_OneStripeCustomer())
    services.create_checkout_session(same_id, services.Principal("customer", first), {"plan": "professional"})
    with pytest.raises(services.PaymentsUnavailable, match="belongs to another account"):
        services.create_checkout_session(
            same_id, services.Principal("customer", second), {"plan": "professional"}
        )
    owners = rows(
        settings.database_url, "SELECT id::text FROM customers WHERE stripe_customer_id IS NOT NULL"
    )
    assert owners == [(first,)]


class _OneStripeCustomer:
    def create_customer(self, **_):
        return "cus_same"

    def create_checkout_session(self, **_):
        from billing.payments import CheckoutSession

        return CheckoutSession("cs_1", "https://checkout.stripe.com/pay/cs_1")
