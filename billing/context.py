"""Build the Billing context of a process (API server or worker) from its settings."""

from __future__ import annotations

from datetime import UTC, datetime

from procrastinate import SyncPsycopgConnector
from psycopg_pool import ConnectionPool

from billing import store
from billing.config import BillingSettings, ConfigError
from billing.jobs import ProcrastinateQueue, make_app
from billing.keys import KeyRing, SigningKey, load_signing_key
from billing.migrate import migrate
from billing.passwords import PasswordHasher
from billing.payments import StripeGateway
from billing.services import Billing


def register_key(pool: ConnectionPool, key: SigningKey) -> None:
    """Publish the current key's public half; refuse a `kid` that already names another key."""
    with pool.connection() as conn:
        stored = store.register_signing_key(conn, key.kid, key.public_pem.decode())
    if stored.strip() != key.public_pem.decode().strip():
        raise ConfigError(
            f"LICENSE_KEY_ID {key.kid!r} already names another key: give a new key a new LICENSE_KEY_ID"
        )


def build(settings: BillingSettings, *, pool_size: int = 20, apply_migrations: bool = True) -> Billing:
    """Migrate the database, load the signing key, open the pool; everything a use case needs."""
    key = load_signing_key(settings)  # before touching the database: a bad key fails fast
    if apply_migrations:
        migrate(settings.database_url)
    pool = ConnectionPool(settings.database_url, min_size=2, max_size=pool_size, open=True, name="billing")
    try:
        register_key(pool, key)
    except BaseException:
        pool.close()
        raise

    def published() -> dict[str, str]:
        with pool.connection() as conn:
            return store.published_keys(conn, datetime.now(UTC))

    queue_app = make_app(SyncPsycopgConnector(), settings.suspension_check_cron)
    queue_app.open(pool)
    return Billing(
        settings=settings,
        pool=pool,
        keys=KeyRing(key, published),
        payments=StripeGateway(
            settings.stripe_secret_key,
            settings.stripe_webhook_secret,
            settings.stripe_api_base,
            settings.webhook_tolerance_seconds,
        ),
        queue=ProcrastinateQueue(queue_app),
        passwords=PasswordHasher(settings.bcrypt_rounds),
    )
