"""Billing's domain rules, without HTTP, SQL or Stripe: signup, trials, licenses, events, suspension."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing.domain import (
    ACTIVE,
    CANCELED,
    PAST_DUE,
    TRIALING,
    StripeChange,
    Subscription,
    Terms,
    ValidationFailed,
    apply_stripe_change,
    license_terms,
    start_trial,
    suspension_reason,
    validate_signup,
)
from billing.passwords import PasswordHasher

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TERMS = Terms(trial_days=14, paid_period_days=30, grace_days=7)
GOOD = {"email": "ops@acme.example", "password": "correct horse", "company_name": "ACME Corp"}


def signup_error(**changes) -> str:
    with pytest.raises(ValidationFailed) as e:
        validate_signup({**GOOD, **changes})
    return e.value.message


def test_a_good_signup_keeps_the_email_as_written_and_trims_the_company():
    req = validate_signup({**GOOD, "email": "Ops@ACME.example", "company_name": "  ACME Corp "})
    assert (req.email, req.company_name) == ("Ops@ACME.example", "ACME Corp")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"email": "not-an-email"}, "'email' is not a valid email address"),
        ({"email": "a@b"}, "'email' is not a valid email address"),
        ({"email": "a b@c.example"}, "'email' is not a valid email address"),
        ({"email": "x" * 250 + "@a.io"}, "'email' must be at most 254 characters"),
        ({"email": 42}, "'email' must be a string"),
        ({"password": "short"}, "'password' must be at least 8 characters"),
        ({"password": "é" * 37}, "'password' must be at most 72 bytes in UTF-8 (it is 74)"),
        ({"password": "a" * 73}, "'password' must be at most 72 bytes in UTF-8 (it is 73)"),
        ({"password": "pass\x00word!"}, "'password' must not contain NUL characters"),
        ({"password": "\ud800" * 9}, "'password' contains an invalid character (a lone surrogate)"),
        ({"company_name": "   "}, "'company_name' is required"),
        ({"company_name": "ACME\x00"}, "'company_name' must not contain control characters"),
        ({"company_name": "x" * 201}, "'company_name' must be at most 200 characters"),
        ({"company_name": "\udfff"}, "'company_name' contains an invalid character (a lone surrogate)"),
        ({"plan": "enterprise"}, "unknown field(s): 'plan'"),
    ],
)
def test_every_signup_rule_names_the_field(changes, message):
    assert signup_error(**changes) == message


def test_missing_fields_and_non_objects_are_refused():
    assert signup_error(company_name=None) == "'company_name' must be a string"
    with pytest.raises(ValidationFailed, match="JSON object"):
        validate_signup(["ops@acme.example"])


def test_seventy_two_bytes_is_the_longest_password_and_it_round_trips():
    hasher = PasswordHasher(rounds=4)
    password = "a" * 70 + "é"  # 72 bytes
    assert validate_signup({**GOOD, "password": password}).password == password
    stored = hasher.hash(password)
    assert hasher.check(password, stored)
    assert not hasher.check("a" * 70 + "e", stored)
    # Longer passwords never match (bcrypt 5 would raise): a 401 at login, never a 500.
    assert not hasher.check(password + "x", stored)
    assert not hasher.check("x", None)


def test_a_signup_starts_a_fourteen_day_starter_trial_whose_license_ends_with_it():
    sub = start_trial(NOW, TERMS)
    assert (sub.plan, sub.status, sub.trial_ends_at) == ("starter", TRIALING, NOW + timedelta(days=14))
    terms = license_terms(sub, NOW, TERMS)
    assert (terms.plan, terms.expires_at, terms.trial) == ("starter", NOW + timedelta(days=14), True)


def paid(**kw) -> Subscription:
    base = {
        "plan": "professional",
        "status": ACTIVE,
        "current_period_start": NOW,
        "current_period_end": NOW + timedelta(days=30),
        "stripe_subscription_id": "sub_1",
        "last_event_at": NOW,
    }
    return Subscription(**(base | kw))


def test_licenses_of_paid_past_due_and_canceled_subscriptions():
    assert license_terms(paid(), NOW, TERMS).expires_at == NOW + timedelta(days=37)  # period + grace
    late = paid(status=PAST_DUE, grace_until=NOW + timedelta(days=40))
    assert license_terms(late, NOW, TERMS).expires_at == NOW + timedelta(days=40)
    assert license_terms(paid(status=CANCELED), NOW, TERMS).expires_at == NOW + timedelta(days=30)


def change(kind: str, at: datetime, **kw) -> StripeChange:
    return StripeChange(kind=kind, created=at, **kw)


def test_checkout_turns_a_trial_into_a_paid_plan_for_thirty_days():
    out = apply_stripe_change(
        start_trial(NOW, TERMS),
        change("checkout_completed", NOW, plan="professional", stripe_subscription_id="sub_9"),
        NOW,
        TERMS,
        suspended=False,
    )
    sub = out.subscription
    assert out.changed and not out.reactivate
    assert (sub.status, sub.plan, sub.stripe_subscription_id) == (ACTIVE, "professional", "sub_9")
    assert sub.current_period_end == NOW + timedelta(days=30)


def test_an_invoice_extends_the_period_and_a_late_older_one_never_shortens_it():
    later = NOW + timedelta(days=60)
    out = apply_stripe_change(
        paid(), change("invoice_paid", NOW + timedelta(days=1), period_end=later), NOW, TERMS, False
    )
    assert out.subscription.current_period_end == later
    older = apply_stripe_change(
        out.subscription, change("invoice_paid", NOW, period_end=NOW + timedelta(days=30)), NOW, TERMS, False
    )
    assert older.subscription.current_period_end == later and not older.changed


def test_events_out_of_order_never_move_a_subscription_backwards():
    sub = paid(last_event_at=NOW + timedelta(hours=2))  # a payment at +2h was applied first
    failed_earlier = change("payment_failed", NOW + timedelta(hours=1))
    out = apply_stripe_change(sub, failed_earlier, NOW + timedelta(hours=3), TERMS, False)
    assert out.subscription.status == ACTIVE and not out.changed
    assert "older" in out.note
    old_plan = change("updated", NOW, plan="starter", status="active")
    assert apply_stripe_change(sub, old_plan, NOW, TERMS, False).subscription.plan == "professional"


def test_a_failed_payment_starts_the_grace_period_once_and_a_payment_ends_it():
    out = apply_stripe_change(paid(), change("payment_failed", NOW + timedelta(minutes=1)), NOW, TERMS, False)
    assert out.subscription.status == PAST_DUE and out.subscription.grace_until == NOW + timedelta(days=7)
    again = apply_stripe_change(
        out.subscription,
        change("payment_failed", NOW + timedelta(days=1)),
        NOW + timedelta(days=1),
        TERMS,
        False,
    )
    assert again.subscription.grace_until == NOW + timedelta(days=7)  # not pushed out by a retry
    paid_again = apply_stripe_change(
        again.subscription, change("invoice_paid", NOW + timedelta(days=2)), NOW, TERMS, suspended=True
    )
    assert paid_again.subscription.status == ACTIVE and paid_again.subscription.grace_until is None
    assert paid_again.reactivate


def test_subscription_updates_and_deletion():
    sub = paid()
    up = apply_stripe_change(
        sub,
        change("updated", NOW + timedelta(seconds=1), plan="enterprise", status="active"),
        NOW,
        TERMS,
        False,
    )
    assert up.subscription.plan == "enterprise" and up.changed
    unpaid = apply_stripe_change(
        sub, change("updated", NOW + timedelta(seconds=1), status="unpaid"), NOW, TERMS, False
    )
    assert unpaid.subscription.status == PAST_DUE
    gone = apply_stripe_change(
        sub, change("deleted", NOW + timedelta(seconds=1), status="canceled"), NOW, TERMS, False
    )
    assert gone.subscription.status == CANCELED


def test_suspension_reasons():
    trial = start_trial(NOW, TERMS)
    assert suspension_reason(trial, NOW + timedelta(days=13)) is None
    assert suspension_reason(trial, NOW + timedelta(days=14)) == "the trial ended without a payment"
    late = paid(status=PAST_DUE, grace_until=NOW + timedelta(days=7))
    assert suspension_reason(late, NOW + timedelta(days=6)) is None
    assert suspension_reason(late, NOW + timedelta(days=7)) == "the payment grace period ended"
    assert suspension_reason(paid(), NOW + timedelta(days=365)) is None  # active: Stripe renews
    canceled = paid(status=CANCELED)
    assert suspension_reason(canceled, NOW + timedelta(days=29)) is None
    assert "canceled" in suspension_reason(canceled, NOW + timedelta(days=30))
