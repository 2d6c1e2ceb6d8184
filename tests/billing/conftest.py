"""Fixtures for the billing service: a migrated database, keys, stripe-mock, the app, signed webhooks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest

from billing.api import create_app
from billing.config import BillingSettings
from billing.context import build
from billing.migrate import migrate
from billing.services import Billing
from devenv.stripe_mock import signed_event, stripe_event  # noqa: F401 (stripe_event re-exported)
from licensing.keys import generate_private_key_pem, public_key_pem

KID = "billing-test-1"
ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec_" + uuid.uuid4().hex
TABLES = (
    "audit_log",
    "deployments",
    "license_history",
    "subscriptions",
    "webhook_events",
    "customers",
    "signing_keys",
    "procrastinate_jobs",
    "procrastinate_periodic_defers",
)


@dataclass(frozen=True)
class KeyFiles:
    private_file: Path
    public_pem: bytes


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory) -> KeyFiles:
    folder = tmp_path_factory.mktemp("billing-keys")
    private = generate_private_key_pem()
    (folder / "license-private.pem").write_bytes(private)
    return KeyFiles(folder / "license-private.pem", public_key_pem(private))


@pytest.fixture(scope="session")
def stripe_mock(service_data_dir):
    from devenv.ports import free_port
    from devenv.stripe_mock import LocalStripeMock

    mock = LocalStripeMock(service_data_dir / "stripe-mock", port=free_port())
    mock.start()
    yield mock
    mock.stop()


@pytest.fixture(scope="session")
def billing_db_url(postgres) -> str:
    url = postgres.create_database("billing_test")
    migrate(url)
    return url


def empty_database(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")


@pytest.fixture
def settings(billing_db_url, signing_key, stripe_mock) -> BillingSettings:
    """Test settings: a fast bcrypt cost, stripe-mock, the admin token and webhook secret above."""
    empty_database(billing_db_url)
    return BillingSettings(
        database_url=billing_db_url,
        signing_key_file=signing_key.private_file,
        signing_key_id=KID,
        bcrypt_rounds=4,
        admin_token=ADMIN_TOKEN,
        stripe_secret_key="sk_test_123",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=stripe_mock.url,
        stripe_prices={"professional": "price_pro", "enterprise": "price_ent"},
        max_body_bytes=16 * 1024,
    )


@pytest.fixture
def billing(settings) -> Iterator[Billing]:
    b = build(settings, pool_size=8, apply_migrations=False)
    yield b
    b.pool.close()


@pytest.fixture
def client(billing):
    return create_app(billing).test_client()


def rebuild(billing: Billing, **changes) -> Billing:
    """The same database with other settings (e.g. a rotated key), as a restarted service."""
    return build(replace(billing.settings, **changes), pool_size=4, apply_migrations=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


def signup(client, email: str = "ops@acme.example", password: str = "correct horse", company: str = "ACME"):
    body = {"email": email, "password": password, "company_name": company}
    return client.post("/api/customers/signup", json=body)


def login_token(client, email: str = "ops@acme.example", password: str = "correct horse") -> str:
    resp = client.post("/api/customers/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.json
    return resp.json["access_token"]


def sign_webhook(event: dict, secret: str = WEBHOOK_SECRET, at: int | None = None) -> tuple[bytes, str]:
    """The body and `Stripe-Signature` header exactly as Stripe builds them."""
    return signed_event(event, secret, at)


def post_webhook(client, event: dict, **kw):
    body, header = sign_webhook(event, **kw)
    headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
    return client.post("/api/webhooks/stripe", data=body, headers=headers)


def rows(url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def jobs(url: str, task: str | None = None) -> list[dict]:
    """Queued jobs (procrastinate), newest last."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT task_name, args, lock, queueing_lock, status FROM procrastinate_jobs ORDER BY id"
        ).fetchall()
    keys = ("task", "args", "lock", "queueing_lock", "status")
    out = [dict(zip(keys, r, strict=True)) for r in found]
    return [j for j in out if task is None or j["task"] == f"billing:{task}"]
