"""Billing's use cases: each one plain function that owns its transaction and raises domain errors.

HTTP handlers (billing/api/) and jobs (billing/jobs.py) only call these. Collaborators come in a
`Billing` context: the connection pool, the key ring, the payment gateway, the job queue, the
password hasher and the clock, so the rules run in tests without HTTP or Stripe.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import jwt
import psycopg
from psycopg_pool import ConnectionPool

from billing import store
from billing.config import BillingSettings
from billing.domain import (
    CUSTOMER_ACTIVE,
    CUSTOMER_DELETED,
    CUSTOMER_SUSPENDED,
    Conflict,
    EmailTaken,
    Forbidden,
    InvalidCredentials,
    NotFound,
    PaymentsUnavailable,
    Subscription,
    Terms,
    Unauthorized,
    ValidationFailed,
    apply_stripe_change,
    check_email,
    check_plan,
    clean_text,
    license_terms,
    start_trial,
    suspension_reason,
    validate_signup,
)
from billing.keys import KeyRing
from billing.passwords import PasswordHasher
from billing.payments import InvalidWebhook, PaymentError, PaymentGateway, read_event
from licensing import (
    AccessTokenError,
    LicenseError,
    sign_access_token,
    sign_license,
    verify_access_token,
    verify_license,
)

log = logging.getLogger(__name__)

MAX_URL = 2048


class JobQueue(Protocol):
    """Deferring jobs inside the caller's transaction (so a rolled-back change queues nothing)."""

    def defer_deploy(self, conn: psycopg.Connection, customer_id: str, reason: str) -> None: ...

    def defer_destroy(self, conn: psycopg.Connection, customer_id: str) -> None: ...

    def defer_stripe_event(self, conn: psycopg.Connection, event_id: str) -> None: ...


@dataclass
class Billing:
    """Everything the use cases need, built once per process."""

    settings: BillingSettings
    pool: ConnectionPool
    keys: KeyRing
    payments: PaymentGateway
    queue: JobQueue
    passwords: PasswordHasher
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def terms(self) -> Terms:
        s = self.settings
        return Terms(trial_days=s.trial_days, paid_period_days=s.paid_period_days, grace_days=s.grace_days)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an operator (`admin`), a signed-in customer, or a customer's own instance."""

    kind: str  # "admin" | "customer" | "instance"
    customer_id: str | None = None

    def may_act_for(self, customer_id: str) -> bool:
        return self.kind == "admin" or self.customer_id == customer_id


# --- identity ------------------------------------------------------------------------------------
def authenticate(b: Billing, authorization: str | None, *, allow_license: bool = False) -> Principal:
    """The caller behind `Authorization: Bearer ...`: the admin token, an access token, or (where
    allowed) the instance's own license. Raise Unauthorized for anything else."""
    scheme, _, credential = (authorization or "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthorized("send Authorization: Bearer <access token>")
    if b.settings.admin_token and hmac.compare_digest(credential.encode(), b.settings.admin_token.encode()):
        return Principal("admin")
    try:
        claims = jwt.decode(credential, options={"verify_signature": False})
        audience = claims.get("aud") or claims.get("customer_id")
    except jwt.PyJWTError:
        raise Unauthorized("the bearer token is not a valid token") from None
    if not isinstance(audience, str):
        raise Unauthorized("the bearer token names no customer")
    try:
        token = verify_access_token(
            credential, b.keys, customer_id=audience, issuer=b.settings.issuer, now=b.clock()
        )
        return Principal("customer", token.customer_id)
    except AccessTokenError as e:
        if not allow_license or "not an access token" not in str(e):
            raise Unauthorized(str(e)) from None
    try:
        # The instance's own license proves which customer it is (the dashboard's Upgrade button).
        lic = verify_license(
            credential,
            b.keys,
            customer_id=audience,
            issuer=b.settings.issuer,
            now=b.clock(),
            allow_expired=True,
        )
    except LicenseError as e:
        raise Unauthorized(f"the bearer token is neither an access token nor a license: {e}") from None
    return Principal("instance", lic.customer_id)


def require_admin(principal: Principal) -> None:
    if principal.kind != "admin":
        raise Forbidden("this needs the admin token")


# --- signup and login ------------------------------------------------------------------------------
def _issue_license(
    b: Billing, conn: psycopg.Connection, customer_id: str, sub: Subscription, reason: str
) -> str:
    """Sign the license `sub` earns, record it in license_history, keep its key published."""
    now = b.clock()
    terms = license_terms(sub, now, b.terms)
    key = b.keys.current
    token = sign_license(
        key.private_pem,
        kid=key.kid,
        customer_id=customer_id,
        plan=terms.plan,
        issued_at=now,
        expires_at=terms.expires_at,
        issuer=b.settings.issuer,
        trial=terms.trial,
    )
    store.insert_license(
        conn,
        customer_id,
        reason=reason,
        plan=terms.plan,
        kid=key.kid,
        trial=terms.trial,
        license=token,
        issued_at=now,
        expires_at=terms.expires_at,
    )
    store.extend_key_validity(conn, key.kid, terms.expires_at)
    return token


def signup(b: Billing, data: object) -> dict:
    """Customer + trial + license + history + audit + a queued deploy, in one transaction.

    Answers at once: the instance is provisioned by a worker, never inside this request.
    """
    req = validate_signup(data)
    with b.pool.connection() as conn:
        # Cheap early answer; the unique index below is what makes concurrent signups safe.
        if store.email_taken(conn, req.email):
            raise EmailTaken(f"an account with {req.email!r} exists already")
    password_hash = b.passwords.hash(req.password)  # ~50 ms of CPU: outside any transaction
    customer_id = str(uuid.uuid4())
    sub = start_trial(b.clock(), b.terms)
    try:
        with b.pool.connection() as conn, conn.transaction():
            store.insert_customer(conn, customer_id, req.email, password_hash, req.company_name)
            store.insert_subscription(conn, customer_id, sub)
            license_key = _issue_license(b, conn, customer_id, sub, "trial_signup")
            store.audit(
                conn,
                customer_id,
                "customer",
                "signup",
                {"plan": sub.plan, "trial_ends_at": str(sub.trial_ends_at)},
            )
            b.queue.defer_deploy(conn, customer_id, "signup")
    except psycopg.errors.UniqueViolation as e:
        if e.diag.constraint_name == store.EMAIL_CONSTRAINT:
            raise EmailTaken(f"an account with {req.email!r} exists already") from None
        raise
    log.info("customer signed up", extra={"customer_id": customer_id})
    return {
        "customer_id": customer_id,
        "license": license_key,
        "instance_url": b.settings.instance_url(customer_id),
        "deployment_status": "provisioning",
    }


def login(b: Billing, data: object) -> dict:
    """An access token for the customer's instance; wrong email and wrong password answer alike."""
    if not isinstance(data, dict):
        raise ValidationFailed('send a JSON object like {"email", "password"}')
    email = check_email(data.get("email"))
    password = data.get("password")
    if not isinstance(password, str):
        raise ValidationFailed("'password' must be a string", field="password")
    with b.pool.connection() as conn:
        customer = store.customer_by_email(conn, email)
    # Same work whatever is wrong, so the answer time does not tell whether the address exists.
    known = customer is not None and customer["status"] != CUSTOMER_DELETED
    matches = b.passwords.check(password, customer["password_hash"] if known else None)
    if not (known and matches):
        raise InvalidCredentials("wrong email or password")
    ttl = timedelta(minutes=b.settings.access_token_minutes)
    key = b.keys.current
    token = sign_access_token(
        key.private_pem,
        kid=key.kid,
        customer_id=customer["id"],
        subject=customer["id"],
        role="admin",
        ttl=ttl,
        issued_at=b.clock(),
        issuer=b.settings.issuer,
    )
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": int(ttl.total_seconds()),
        "customer_id": customer["id"],
        "instance_url": b.settings.instance_url(customer["id"]),
    }


# --- reading customers ---------------------------------------------------------------------------
def _customer_or_404(conn: psycopg.Connection, customer_id: str, *, for_update: bool = False) -> dict:
    try:
        uuid.UUID(customer_id)
    except ValueError:
        raise NotFound(f"no customer {customer_id!r}") from None
    row = store.get_customer(conn, customer_id, for_update=for_update)
    if row is None:
        raise NotFound(f"no customer {customer_id!r}")
    return row


def get_customer(b: Billing, principal: Principal, customer_id: str) -> dict:
    """Status, deployment, plan, subscription, license expiry and instance URL of one customer."""
    if not principal.may_act_for(customer_id):
        raise Forbidden("this token is for another customer")
    with b.pool.connection() as conn:
        row = _customer_or_404(conn, customer_id)
        sub = store.get_subscription(conn, customer_id)
        lic = store.latest_license(conn, customer_id)
    return {
        "customer_id": row["id"],
        "email": row["email"],
        "company_name": row["company_name"],
        "status": row["status"],
        "deployment_status": row["deployment_status"],
        "deployed_at": row["deployed_at"],
        "deployment_error": row["deployment_error"],
        "plan": sub.plan if sub else None,
        "subscription": _subscription_view(sub),
        "license_expires_at": lic["expires_at"] if lic else None,
        "instance_url": b.settings.instance_url(row["id"]),
    }


def _subscription_view(sub: Subscription | None) -> dict | None:
    if sub is None:
        return None
    return {
        "plan": sub.plan,
        "status": sub.status,
        "trial_ends_at": sub.trial_ends_at,
        "current_period_end": sub.current_period_end,
        "grace_until": sub.grace_until,
    }


def list_customers(b: Billing, principal: Principal, limit: int, offset: int) -> dict:
    require_admin(principal)
    with b.pool.connection() as conn:
        return {
            "customers": store.list_customers(conn, limit, offset),
            "total": store.count_customers(conn),
        }


def current_license(b: Billing, customer_id: str) -> dict | None:
    with b.pool.connection() as conn:
        return store.latest_license(conn, customer_id)


# --- operators -----------------------------------------------------------------------------------
def request_deploy(b: Billing, principal: Principal, customer_id: str) -> dict:
    """Queue a deploy of the customer's stack (a no-op `up` when nothing changed)."""
    require_admin(principal)
    with b.pool.connection() as conn, conn.transaction():
        row = _customer_or_404(conn, customer_id, for_update=True)
        if row["status"] == CUSTOMER_DELETED:
            raise Conflict("the customer was offboarded; its stack is gone")
        store.set_deployment_status(conn, customer_id, "provisioning", error=row["deployment_error"])
        store.audit(conn, customer_id, "admin", "redeploy_requested")
        b.queue.defer_deploy(conn, customer_id, "admin")
    return {"customer_id": customer_id, "deployment_status": "provisioning"}


def offboard(b: Billing, principal: Principal, customer_id: str) -> dict:
    """Destroy the stack (a queued job), keep the customer and its billing history, mark it deleted."""
    require_admin(principal)
    with b.pool.connection() as conn, conn.transaction():
        row = _customer_or_404(conn, customer_id, for_update=True)
        if row["status"] == CUSTOMER_DELETED:
            return {
                "customer_id": customer_id,
                "status": CUSTOMER_DELETED,
                "deployment_status": row["deployment_status"],
            }
        sub = store.get_subscription(conn, customer_id)
        store.set_status(conn, customer_id, CUSTOMER_DELETED, deleted_at=b.clock())
        store.set_deployment_status(conn, customer_id, "destroying")
        store.audit(conn, customer_id, "admin", "offboarded")
        b.queue.defer_destroy(conn, customer_id)
    if sub is not None and sub.stripe_subscription_id:
        try:
            b.payments.cancel_subscription(sub.stripe_subscription_id)
        except PaymentError as e:  # the stack goes anyway; the operator sees why billing did not stop
            log.warning(
                "could not cancel the Stripe subscription",
                extra={"customer_id": customer_id, "error": str(e)},
            )
    return {"customer_id": customer_id, "status": CUSTOMER_DELETED, "deployment_status": "destroying"}


# --- Stripe checkout and webhooks ------------------------------------------------------------------
def _return_url(value: object, name: str, default: str) -> str:
    if value is None:
        return default
    url = clean_text(value, name, max_chars=MAX_URL)
    if not url.startswith(("https://", "http://")):
        raise ValidationFailed(f"'{name}' must be an http(s) URL", field=name)
    return url


def create_checkout_session(b: Billing, principal: Principal, data: object) -> dict:
    """A subscription-mode Checkout Session for the plan; creates the Stripe customer once."""
    if not isinstance(data, dict):
        raise ValidationFailed('send a JSON object like {"plan": "professional"}')
    unknown = sorted(set(data) - {"plan", "customer_id", "success_url", "cancel_url"})
    if unknown:
        raise ValidationFailed(f"unknown field(s): {', '.join(map(repr, unknown))}", field=unknown[0])
    plan = check_plan(data.get("plan", "professional"))
    customer_id = data.get("customer_id", principal.customer_id)
    if not isinstance(customer_id, str) or not customer_id:
        raise ValidationFailed("'customer_id' is required with the admin token", field="customer_id")
    if not principal.may_act_for(customer_id):
        raise Forbidden("this token is for another customer")
    instance = b.settings.instance_url(customer_id)
    success = _return_url(data.get("success_url"), "success_url", f"{instance}/?checkout=success")
    cancel = _return_url(data.get("cancel_url"), "cancel_url", f"{instance}/?checkout=cancelled")
    # The row lock serialises concurrent checkouts, so one Stripe customer is ever created.
    with b.pool.connection() as conn, conn.transaction():
        row = _customer_or_404(conn, customer_id, for_update=True)
        if row["status"] == CUSTOMER_DELETED:
            raise Conflict("the customer was offboarded")
        try:
            stripe_customer = row["stripe_customer_id"] or b.payments.create_customer(
                email=row["email"], customer_id=customer_id
            )
            if not row["stripe_customer_id"]:
                try:
                    store.set_stripe_customer(conn, customer_id, stripe_customer)
                except psycopg.errors.UniqueViolation:
                    raise PaymentError(
                        f"Stripe answered with customer {stripe_customer}, which belongs to another account"
                    ) from None
            session = b.payments.create_checkout_session(
                stripe_customer_id=stripe_customer,
                price=b.settings.price_for(plan),
                success_url=success,
                cancel_url=cancel,
                customer_id=customer_id,
                plan=plan,
            )
        except PaymentError as e:
            raise PaymentsUnavailable(str(e)) from None
        store.audit(
            conn, customer_id, principal.kind, "checkout_started", {"plan": plan, "session": session.id}
        )
    return {"checkoutUrl": session.url, "sessionId": session.id}


def receive_stripe_webhook(b: Billing, raw_body: bytes, signature: str | None) -> dict:
    """Verify, store by event id (a repeated delivery is a no-op), queue the work, answer at once."""
    try:
        event = b.payments.verify_webhook(raw_body, signature)
    except InvalidWebhook as e:
        raise ValidationFailed(str(e), field="Stripe-Signature") from None
    created = datetime.fromtimestamp(event["created"], UTC)
    with b.pool.connection() as conn, conn.transaction():
        fresh = store.insert_webhook_event(conn, event["id"], event["type"], created, event)
        if fresh:
            b.queue.defer_stripe_event(conn, event["id"])
    return {"received": True, "duplicate": not fresh}


def process_stripe_event(b: Billing, event_id: str) -> str:
    """Apply one stored event: subscription change → new license → queued deploy. Returns a note."""
    plan_of_price = {price: plan for plan, price in b.settings.stripe_prices.items()}
    with b.pool.connection() as conn, conn.transaction():
        event = store.get_webhook_event(conn, event_id, for_update=True)
        if event is None:
            return "unknown event"
        if event["processed_at"] is not None:
            return f"already processed: {event['result']}"
        facts = read_event(event["payload"], plan_of_price)
        result = _apply_event(b, conn, facts)
        store.mark_event_processed(conn, event_id, result)
    log.info("stripe event processed", extra={"event_id": event_id, "type": event["type"], "result": result})
    return result


def _apply_event(b: Billing, conn: psycopg.Connection, facts) -> str:
    if facts.change is None:
        return "ignored: not an event billing handles"
    # Our own id (checkout metadata) first, then Stripe's customer id (invoices, subscriptions).
    customer = None
    if facts.customer_id:
        try:
            customer = store.get_customer(conn, str(uuid.UUID(facts.customer_id)))
        except ValueError:
            customer = None
    if customer is None and facts.stripe_customer_id:
        customer = store.customer_by_stripe_id(conn, facts.stripe_customer_id)
    if customer is None:
        return "ignored: no customer for this event"
    customer_id = customer["id"]
    customer = store.get_customer(conn, customer_id, for_update=True)
    if customer["status"] == CUSTOMER_DELETED:
        return "ignored: the customer was offboarded"
    if facts.stripe_customer_id and not customer["stripe_customer_id"]:
        try:
            with conn.transaction():  # a savepoint: the conflict must not abort the whole event
                store.set_stripe_customer(conn, customer_id, facts.stripe_customer_id)
        except psycopg.errors.UniqueViolation:
            return "ignored: the Stripe customer belongs to another account"
    sub = store.get_subscription(conn, customer_id, for_update=True)
    suspended_now = customer["status"] == CUSTOMER_SUSPENDED
    outcome = apply_stripe_change(sub, facts.change, b.clock(), b.terms, suspended_now)
    store.update_subscription(conn, customer_id, outcome.subscription)
    if not outcome.changed and not outcome.reactivate:
        return "no change" + (f" ({outcome.note})" if outcome.note else "")
    _issue_license(b, conn, customer_id, outcome.subscription, facts.change.kind)
    store.audit(
        conn,
        customer_id,
        "stripe",
        "subscription_changed",
        {"kind": facts.change.kind, "plan": outcome.subscription.plan, "status": outcome.subscription.status},
    )
    if outcome.reactivate:
        store.set_status(conn, customer_id, CUSTOMER_ACTIVE)
        store.audit(conn, customer_id, "stripe", "reactivated", {"kind": facts.change.kind})
    store.set_deployment_status(conn, customer_id, "provisioning", error=customer["deployment_error"])
    b.queue.defer_deploy(conn, customer_id, f"stripe:{facts.change.kind}")
    return f"{outcome.subscription.status} {outcome.subscription.plan}" + (
        " (reactivated)" if outcome.reactivate else ""
    )


# --- suspension ------------------------------------------------------------------------------------
def suspend_overdue(b: Billing) -> list[str]:
    """Suspend every instance whose trial ended unpaid or whose grace ran out; returns their ids."""
    now = b.clock()
    with b.pool.connection() as conn:
        candidates = [cid for cid, sub in store.active_subscriptions(conn) if suspension_reason(sub, now)]
    suspended: list[str] = []
    for customer_id in candidates:
        with b.pool.connection() as conn, conn.transaction():
            customer = store.get_customer(conn, customer_id, for_update=True)
            sub = store.get_subscription(conn, customer_id, for_update=True)
            reason = suspension_reason(sub, b.clock()) if sub else None
            if customer is None or customer["status"] != CUSTOMER_ACTIVE or reason is None:
                continue  # paid or changed meanwhile
            store.set_status(conn, customer_id, CUSTOMER_SUSPENDED)
            store.set_deployment_status(conn, customer_id, "provisioning", error=customer["deployment_error"])
            store.audit(conn, customer_id, "system", "suspended", {"reason": reason})
            b.queue.defer_deploy(conn, customer_id, "suspension")
        log.info("instance suspended", extra={"customer_id": customer_id, "reason": reason})
        suspended.append(customer_id)
    return suspended
