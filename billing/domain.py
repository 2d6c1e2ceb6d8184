"""Billing's domain rules as plain data and functions: no Flask, no SQL, no clock of their own.

Signup validation, the trial, what license a subscription earns, how Stripe's subscription events
move a subscription (never backwards, whatever order they arrive in), and when an instance is
suspended or reactivated. The service layer (billing/services.py) applies them in transactions.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from licensing.plans import PLANS

# --- errors the HTTP layer maps to status codes ------------------------------------------------


class DomainError(Exception):
    """A use case refused; `message` is safe to show to the caller."""

    def __init__(self, message: str, **details) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(DomainError):
    """The input breaks a rule (400)."""


class EmailTaken(DomainError):
    """An account with this email exists already (409)."""


class InvalidCredentials(DomainError):
    """Wrong email or password, deliberately not saying which (401)."""


class Unauthorized(DomainError):
    """No usable credential (401)."""


class Forbidden(DomainError):
    """A credential that does not allow this (403)."""


class NotFound(DomainError):
    """No such customer (404)."""


class Conflict(DomainError):
    """The customer's state does not allow this now (409)."""


class PaymentsUnavailable(DomainError):
    """The payment provider failed or is not configured (502/503)."""


# --- signup ------------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(rf"^[^@\s]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")
MAX_EMAIL = 254
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 72  # bcrypt hashes at most 72 bytes; bcrypt 5 raises past that
MAX_COMPANY = 200


@dataclass(frozen=True)
class SignupRequest:
    """A validated signup: the email keeps its case, duplicates are found case-insensitively."""

    email: str
    password: str
    company_name: str


def clean_text(value: object, name: str, *, max_chars: int, required: bool = True) -> str:
    """A string safe to store: no NUL or other control characters, no lone surrogates, not too long."""
    if not isinstance(value, str):
        raise ValidationFailed(f"'{name}' must be a string", field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(
            f"'{name}' contains an invalid character (a lone surrogate)", field=name
        ) from None
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise ValidationFailed(f"'{name}' must not contain control characters", field=name)
    value = value.strip()
    if required and not value:
        raise ValidationFailed(f"'{name}' is required", field=name)
    if len(value) > max_chars:
        raise ValidationFailed(f"'{name}' must be at most {max_chars} characters", field=name)
    return value


def check_password(value: object, name: str = "password") -> str:
    """At least 8 characters and at most 72 bytes in UTF-8 (what bcrypt can hash), no NUL."""
    if not isinstance(value, str):
        raise ValidationFailed(f"'{name}' must be a string", field=name)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationFailed(
            f"'{name}' contains an invalid character (a lone surrogate)", field=name
        ) from None
    if "\x00" in value:
        raise ValidationFailed(f"'{name}' must not contain NUL characters", field=name)
    if len(value) < MIN_PASSWORD_CHARS:
        raise ValidationFailed(f"'{name}' must be at least {MIN_PASSWORD_CHARS} characters", field=name)
    if size > MAX_PASSWORD_BYTES:
        raise ValidationFailed(
            f"'{name}' must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8 (it is {size})", field=name
        )
    return value


def check_email(value: object) -> str:
    email = clean_text(value, "email", max_chars=MAX_EMAIL)
    if not EMAIL.match(email):
        raise ValidationFailed("'email' is not a valid email address", field="email")
    return email


def validate_signup(data: object) -> SignupRequest:
    """Check a signup body; raise ValidationFailed naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise ValidationFailed('send a JSON object like {"email", "password", "company_name"}')
    unknown = sorted(set(data) - {"email", "password", "company_name"})
    if unknown:
        raise ValidationFailed(f"unknown field(s): {', '.join(map(repr, unknown))}", field=unknown[0])
    return SignupRequest(
        email=check_email(data.get("email")),
        password=check_password(data.get("password")),
        company_name=clean_text(data.get("company_name"), "company_name", max_chars=MAX_COMPANY),
    )


# --- subscriptions -------------------------------------------------------------------------------

TRIALING, ACTIVE, PAST_DUE, CANCELED = "trialing", "active", "past_due", "canceled"
SUBSCRIPTION_STATES = (TRIALING, ACTIVE, PAST_DUE, CANCELED)
# A customer's own status; the deployment status is separate (see billing/store.py).
CUSTOMER_ACTIVE, CUSTOMER_SUSPENDED, CUSTOMER_DELETED = "active", "suspended", "deleted"


@dataclass(frozen=True)
class Terms:
    """The commercial constants the rules use (from BillingSettings)."""

    trial_days: int = 14
    paid_period_days: int = 30
    grace_days: int = 7


@dataclass(frozen=True)
class Subscription:
    """One customer's subscription as the rules see it."""

    plan: str
    status: str
    trial_ends_at: datetime | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    grace_until: datetime | None = None
    stripe_subscription_id: str | None = None
    last_event_at: datetime | None = None  # `created` of the newest Stripe event applied


def start_trial(now: datetime, terms: Terms) -> Subscription:
    """Every signup starts on the starter plan, trialing for `trial_days`."""
    return Subscription(plan="starter", status=TRIALING, trial_ends_at=now + timedelta(days=terms.trial_days))


@dataclass(frozen=True)
class LicenseTerms:
    """What the next license of a subscription says."""

    plan: str
    expires_at: datetime
    trial: bool


def license_terms(sub: Subscription, now: datetime, terms: Terms) -> LicenseTerms:
    """Trial: until the trial ends. Paid: the period plus the grace a late renewal needs.
    Past due: until the grace ends. Canceled: until the paid period ends (never extended)."""
    if sub.status == TRIALING:
        return LicenseTerms(sub.plan, sub.trial_ends_at or now, trial=True)
    end = sub.current_period_end or now
    if sub.status == ACTIVE:
        return LicenseTerms(sub.plan, end + timedelta(days=terms.grace_days), trial=False)
    if sub.status == PAST_DUE:
        return LicenseTerms(sub.plan, max(sub.grace_until or now, end), trial=False)
    return LicenseTerms(sub.plan, end, trial=False)


@dataclass(frozen=True)
class StripeChange:
    """What one Stripe event says about a subscription, already read out of Stripe's JSON."""

    kind: str  # "checkout_completed" | "invoice_paid" | "payment_failed" | "updated" | "deleted"
    created: datetime  # the event's `created`
    stripe_subscription_id: str | None = None
    plan: str | None = None
    status: str | None = None  # Stripe's subscription status (updated/deleted events)
    period_start: datetime | None = None
    period_end: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """The subscription after an event, and what follows from it."""

    subscription: Subscription
    changed: bool
    reactivate: bool = False  # a payment arrived for a suspended instance
    note: str = ""


_UNPAID = {"past_due", "unpaid", "incomplete"}


def apply_stripe_change(
    sub: Subscription, change: StripeChange, now: datetime, terms: Terms, suspended: bool
) -> Outcome:
    """Move `sub` as `change` says, never backwards.

    Stripe does not promise delivery order. An event older than the newest one applied may still
    extend the paid period (a paid invoice is a fact), but never changes the status or the plan:
    a late `invoice.payment_failed` cannot undo a later payment, a late `subscription.updated`
    cannot bring back an old plan.
    """
    stale = sub.last_event_at is not None and change.created < sub.last_event_at
    new = sub
    if change.period_end is not None and (
        sub.current_period_end is None or change.period_end > sub.current_period_end
    ):
        new = replace(
            new, current_period_start=change.period_start or now, current_period_end=change.period_end
        )
    if change.stripe_subscription_id and not new.stripe_subscription_id:
        new = replace(new, stripe_subscription_id=change.stripe_subscription_id)
    paid = False
    if not stale:
        grace = now + timedelta(days=terms.grace_days)
        if change.kind in ("checkout_completed", "invoice_paid"):
            paid = True
            new = replace(new, status=ACTIVE, grace_until=None, plan=change.plan or new.plan)
            if new.current_period_end is None or new.current_period_end <= now:
                # Stripe named no period that is still running: a paid period starts now.
                period_end = now + timedelta(days=terms.paid_period_days)
                new = replace(new, current_period_start=now, current_period_end=period_end)
        elif change.kind == "payment_failed":
            if new.status != PAST_DUE:
                new = replace(new, status=PAST_DUE, grace_until=grace)
        elif change.kind == "updated":
            new = replace(new, plan=change.plan or new.plan)
            if change.status == "active" and new.status != ACTIVE:
                paid = True
                new = replace(new, status=ACTIVE, grace_until=None)
            elif change.status in _UNPAID and new.status == ACTIVE:
                new = replace(new, status=PAST_DUE, grace_until=grace)
            elif change.status == "canceled":
                new = replace(new, status=CANCELED, grace_until=None)
        elif change.kind == "deleted":
            new = replace(new, status=CANCELED, grace_until=None)
        new = replace(new, last_event_at=change.created)
    return Outcome(
        subscription=new,
        changed=_material(new) != _material(sub),
        reactivate=suspended and paid and new.status == ACTIVE,
        note="older than the newest event applied: only a longer paid period is taken" if stale else "",
    )


def _material(sub: Subscription) -> tuple:
    """The parts of a subscription a license depends on (not the event bookkeeping)."""
    return (sub.plan, sub.status, sub.trial_ends_at, sub.current_period_end, sub.grace_until)


def suspension_reason(sub: Subscription, now: datetime) -> str | None:
    """Why an instance must be suspended now, or None: unpaid trial, expired grace, ended period."""
    if sub.status == TRIALING and sub.trial_ends_at is not None and sub.trial_ends_at <= now:
        return "the trial ended without a payment"
    if sub.status == PAST_DUE and sub.grace_until is not None and sub.grace_until <= now:
        return "the payment grace period ended"
    if sub.status == CANCELED and (sub.current_period_end is None or sub.current_period_end <= now):
        return "the subscription was canceled and its paid period ended"
    return None


def check_plan(value: object) -> str:
    """A plan name customers can buy (every plan of licensing/plans.py)."""
    if not isinstance(value, str) or value not in PLANS:
        raise ValidationFailed(f"'plan' must be one of {', '.join(PLANS)}", field="plan")
    return value
