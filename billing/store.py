"""All SQL of the billing database, one function per statement; callers own the transactions."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from billing.domain import Subscription

EMAIL_CONSTRAINT = "customers_email_lower_key"
STRIPE_CUSTOMER_CONSTRAINT = "customers_stripe_customer_key"
_CUSTOMER = (
    "id::text AS id, email, password_hash, company_name, status, deployment_status, deployment_error, "
    "deployed_at, stripe_customer_id, created_at, deleted_at"
)


def _one(conn: psycopg.Connection, query: str, params: tuple | dict = ()) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def _all(conn: psycopg.Connection, query: str, params: tuple | dict = ()) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


# --- customers -----------------------------------------------------------------------------------
def insert_customer(conn, customer_id: str, email: str, password_hash: str, company_name: str) -> None:
    """Raises psycopg.errors.UniqueViolation (constraint EMAIL_CONSTRAINT) for a taken address."""
    conn.execute(
        "INSERT INTO customers (id, email, password_hash, company_name) VALUES (%s, %s, %s, %s)",
        (customer_id, email, password_hash, company_name),
    )


def email_taken(conn, email: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM customers WHERE lower(email) = lower(%s) AND deleted_at IS NULL", (email,)
        ).fetchone()
        is not None
    )


def get_customer(conn, customer_id: str, *, for_update: bool = False) -> dict | None:
    lock = " FOR UPDATE" if for_update else ""
    return _one(conn, f"SELECT {_CUSTOMER} FROM customers WHERE id = %s{lock}", (customer_id,))


def customer_by_email(conn, email: str) -> dict | None:
    return _one(
        conn,
        f"SELECT {_CUSTOMER} FROM customers WHERE lower(email) = lower(%s) AND deleted_at IS NULL",
        (email,),
    )


def customer_by_stripe_id(conn, stripe_customer_id: str) -> dict | None:
    return _one(
        conn, f"SELECT {_CUSTOMER} FROM customers WHERE stripe_customer_id = %s", (stripe_customer_id,)
    )


def list_customers(conn, limit: int, offset: int) -> list[dict]:
    return _all(
        conn,
        "SELECT c.id::text AS id, c.email, c.company_name, c.status, c.deployment_status, c.deployed_at, "
        "c.created_at, s.plan, s.status AS subscription_status FROM customers c "
        "LEFT JOIN subscriptions s ON s.customer_id = c.id ORDER BY c.created_at, c.id LIMIT %s OFFSET %s",
        (limit, offset),
    )


def count_customers(conn) -> int:
    return conn.execute("SELECT count(*) FROM customers").fetchone()[0]


def set_stripe_customer(conn, customer_id: str, stripe_customer_id: str) -> None:
    conn.execute(
        "UPDATE customers SET stripe_customer_id = %s WHERE id = %s", (stripe_customer_id, customer_id)
    )


def set_status(conn, customer_id: str, status: str, *, deleted_at: datetime | None = None) -> None:
    conn.execute(
        "UPDATE customers SET status = %s, deleted_at = COALESCE(%s, deleted_at) WHERE id = %s",
        (status, deleted_at, customer_id),
    )


def set_deployment_status(
    conn, customer_id: str, status: str, *, error: str | None = None, deployed_at: datetime | None = None
) -> None:
    """Record the stack's state; `deployed_at` is kept unless a new one is given."""
    conn.execute(
        "UPDATE customers SET deployment_status = %s, deployment_error = %s, "
        "deployed_at = COALESCE(%s, deployed_at) WHERE id = %s",
        (status, error, deployed_at, customer_id),
    )


# --- subscriptions -------------------------------------------------------------------------------
_SUB_FIELDS = (
    "plan",
    "status",
    "trial_ends_at",
    "current_period_start",
    "current_period_end",
    "grace_until",
    "stripe_subscription_id",
    "last_event_at",
)


def insert_subscription(conn, customer_id: str, sub: Subscription) -> None:
    values = asdict(sub)
    conn.execute(
        f"INSERT INTO subscriptions (customer_id, {', '.join(_SUB_FIELDS)}) "
        f"VALUES (%(customer_id)s, {', '.join(f'%({f})s' for f in _SUB_FIELDS)})",
        {"customer_id": customer_id, **values},
    )


def get_subscription(conn, customer_id: str, *, for_update: bool = False) -> Subscription | None:
    lock = " FOR UPDATE" if for_update else ""
    row = _one(
        conn,
        f"SELECT {', '.join(_SUB_FIELDS)} FROM subscriptions WHERE customer_id = %s{lock}",
        (customer_id,),
    )
    return Subscription(**row) if row else None


def update_subscription(conn, customer_id: str, sub: Subscription) -> None:
    conn.execute(
        f"UPDATE subscriptions SET {', '.join(f'{f} = %({f})s' for f in _SUB_FIELDS)}, updated_at = now() "
        "WHERE customer_id = %(customer_id)s",
        {"customer_id": customer_id, **asdict(sub)},
    )


def active_subscriptions(conn) -> list[tuple[str, Subscription]]:
    """Subscriptions of customers that are neither suspended nor deleted (suspension candidates)."""
    rows = _all(
        conn,
        f"SELECT c.id::text AS id, {', '.join('s.' + f for f in _SUB_FIELDS)} FROM subscriptions s "
        "JOIN customers c ON c.id = s.customer_id WHERE c.status = 'active'",
    )
    return [(r.pop("id"), Subscription(**r)) for r in rows]


# --- licenses ------------------------------------------------------------------------------------
def insert_license(
    conn,
    customer_id: str,
    *,
    reason: str,
    plan: str,
    kid: str,
    trial: bool,
    license: str,
    issued_at: datetime,
    expires_at: datetime,
) -> None:
    conn.execute(
        "INSERT INTO license_history (customer_id, action, reason, plan, kid, trial, license, issued_at, "
        "expires_at) VALUES (%s, 'generated', %s, %s, %s, %s, %s, %s, %s)",
        (customer_id, reason, plan, kid, trial, license, issued_at, expires_at),
    )


def latest_license(conn, customer_id: str) -> dict | None:
    return _one(
        conn,
        "SELECT reason, plan, kid, trial, license, issued_at, expires_at FROM license_history "
        "WHERE customer_id = %s ORDER BY id DESC LIMIT 1",
        (customer_id,),
    )


def license_history(conn, customer_id: str) -> list[dict]:
    return _all(
        conn,
        "SELECT action, reason, plan, kid, trial, issued_at, expires_at FROM license_history "
        "WHERE customer_id = %s ORDER BY id",
        (customer_id,),
    )


# --- signing keys --------------------------------------------------------------------------------
def register_signing_key(conn, kid: str, public_pem: str) -> str:
    """Remember a key's public half; returns the public PEM stored under `kid` (maybe another key's)."""
    conn.execute(
        "INSERT INTO signing_keys (kid, public_pem) VALUES (%s, %s) ON CONFLICT (kid) DO NOTHING",
        (kid, public_pem),
    )
    return conn.execute("SELECT public_pem FROM signing_keys WHERE kid = %s", (kid,)).fetchone()[0]


def extend_key_validity(conn, kid: str, until: datetime) -> None:
    """The key must stay published until everything it signed has expired.

    Rounded up to the next midnight (UTC), and only written when that moves it later: concurrent
    signups would otherwise all queue on this one row's lock.
    """
    day = until.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    conn.execute(
        "UPDATE signing_keys SET valid_until = %s "
        "WHERE kid = %s AND (valid_until IS NULL OR valid_until < %s)",
        (day, kid, day),
    )


def published_keys(conn, now: datetime) -> dict[str, str]:
    """kid -> public PEM of every key that signed something still valid."""
    rows = conn.execute(
        "SELECT kid, public_pem FROM signing_keys WHERE valid_until > %s ORDER BY created_at", (now,)
    ).fetchall()
    return dict(rows)


# --- deployments ---------------------------------------------------------------------------------
def start_deployment(
    conn, customer_id: str, action: str, reason: str, job_id: int | None, attempt: int
) -> int:
    return conn.execute(
        "INSERT INTO deployments (customer_id, action, reason, job_id, attempt, status) "
        "VALUES (%s, %s, %s, %s, %s, 'running') RETURNING id",
        (customer_id, action, reason, job_id, attempt),
    ).fetchone()[0]


def abandon_running(conn, customer_id: str) -> int:
    """Close the attempts a dead worker left `running` (the stack's job lock says none is alive)."""
    return conn.execute(
        "UPDATE deployments SET status = 'failed', finished_at = now(), "
        "error = 'the worker running this attempt stopped before it finished' "
        "WHERE customer_id = %s AND status = 'running'",
        (customer_id,),
    ).rowcount


def finish_deployment(
    conn, deployment_id: int, ok: bool, seconds: float, changes: dict[str, int], error: str | None
) -> None:
    conn.execute(
        "UPDATE deployments SET status = %s, finished_at = now(), seconds = %s, changes = %s, error = %s "
        "WHERE id = %s",
        ("succeeded" if ok else "failed", seconds, Jsonb(changes), error, deployment_id),
    )


def deployments(conn, customer_id: str, limit: int = 20) -> list[dict]:
    return _all(
        conn,
        "SELECT id, action, reason, attempt, status, started_at, finished_at, seconds, changes, error "
        "FROM deployments WHERE customer_id = %s ORDER BY id DESC LIMIT %s",
        (customer_id, limit),
    )


# --- Stripe events and the audit trail -----------------------------------------------------------
def insert_webhook_event(conn, event_id: str, event_type: str, created: datetime, payload: dict) -> bool:
    """Store an event once; False when this id was stored before (a repeated delivery)."""
    cur = conn.execute(
        "INSERT INTO webhook_events (id, type, created, payload) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING",
        (event_id, event_type, created, Jsonb(payload)),
    )
    return cur.rowcount == 1


def get_webhook_event(conn, event_id: str, *, for_update: bool = False) -> dict | None:
    lock = " FOR UPDATE" if for_update else ""
    return _one(
        conn,
        f"SELECT id, type, created, payload, processed_at, result FROM webhook_events WHERE id = %s{lock}",
        (event_id,),
    )


def mark_event_processed(conn, event_id: str, result: str) -> None:
    conn.execute(
        "UPDATE webhook_events SET processed_at = now(), result = %s WHERE id = %s", (result, event_id)
    )


def audit(
    conn, customer_id: str | None, actor: str, action: str, details: dict[str, Any] | None = None
) -> None:
    conn.execute(
        "INSERT INTO audit_log (customer_id, actor, action, details) VALUES (%s, %s, %s, %s)",
        (customer_id, actor, action, Jsonb(details or {})),
    )


def audit_trail(conn, customer_id: str) -> list[dict]:
    return _all(
        conn,
        "SELECT at, actor, action, details FROM audit_log WHERE customer_id = %s ORDER BY id",
        (customer_id,),
    )
