"""All configuration of the billing service and its worker, read from the environment in one place.

Only `BillingSettings.from_env` looks at environment variables; tests build `BillingSettings(...)`
directly. Secrets (the signing key, Stripe keys, the admin token) never appear in `repr()`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from licensing import DEFAULT_ISSUER
from licensing.plans import PLANS


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True)
class BillingSettings:
    """Settings of the billing API and the provisioning worker; each field names its variable."""

    database_url: str = field(repr=False)  # DATABASE_URL
    bind_host: str = "127.0.0.1"  # BIND_HOST (0.0.0.0 in the image)
    port: int = 3000  # BILLING_PORT
    threads: int = 16  # BILLING_THREADS: WSGI worker threads
    base_domain: str = "iotistic.cloud"  # BASE_DOMAIN: instances are https://{customer_id}.{domain}
    public_url: str = "http://127.0.0.1:3000"  # BILLING_PUBLIC_URL: where customers reach this service
    # The key that signs licenses and access tokens: a file, PEM text, or an AWS Secrets Manager secret.
    signing_key_file: Path | None = None  # LICENSE_SIGNING_KEY_FILE
    signing_key_pem: str | None = field(default=None, repr=False)  # LICENSE_SIGNING_KEY
    signing_key_secret_id: str | None = None  # LICENSE_SIGNING_KEY_SECRET_ID (boto3; AWS_* settings)
    signing_key_id: str = "billing-1"  # LICENSE_KEY_ID: the `kid` of new tokens
    issuer: str = DEFAULT_ISSUER  # LICENSE_ISSUER
    # Customers and plans.
    bcrypt_rounds: int = 10  # BCRYPT_ROUNDS
    trial_days: int = 14  # TRIAL_DAYS
    paid_period_days: int = 30  # PAID_PERIOD_DAYS: a paid period without an invoice's own dates
    grace_days: int = 7  # PAYMENT_GRACE_DAYS: a failed payment suspends after this
    access_token_minutes: int = 15  # ACCESS_TOKEN_MINUTES
    admin_token: str = field(default="", repr=False)  # ADMIN_TOKEN: bearer token of operators
    max_body_bytes: int = 64 * 1024  # MAX_BODY_BYTES: larger requests get 413
    # Stripe.
    stripe_secret_key: str = field(default="", repr=False)  # STRIPE_SECRET_KEY
    stripe_webhook_secret: str = field(default="", repr=False)  # STRIPE_WEBHOOK_SECRET
    stripe_api_base: str = ""  # STRIPE_API_BASE: e.g. stripe-mock's http://127.0.0.1:12111
    stripe_prices: Mapping[str, str] = field(default_factory=dict)  # STRIPE_PRICE_<PLAN>
    webhook_tolerance_seconds: int = 300  # STRIPE_WEBHOOK_TOLERANCE_SECONDS
    # Provisioning worker.
    deploy_timeout_seconds: float = 300.0  # DEPLOY_TIMEOUT_SECONDS
    deploy_attempts: int = 5  # DEPLOY_ATTEMPTS: tries per job for transient failures
    worker_concurrency: int = 2  # WORKER_CONCURRENCY: deploys at once per worker process
    suspension_check_cron: str = "* * * * *"  # SUSPENSION_CHECK_CRON

    def instance_url(self, customer_id: str) -> str:
        return f"https://{customer_id}.{self.base_domain}"

    def price_for(self, plan: str) -> str:
        """The Stripe price of a plan (STRIPE_PRICE_<PLAN>, default `price_<plan>`)."""
        return self.stripe_prices.get(plan) or f"price_{plan}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BillingSettings:
        """Every setting from `env` (default os.environ); ConfigError names what is wrong."""
        env = os.environ if env is None else env
        values: dict = {}
        for f in fields(cls):
            name = _ENV_NAMES.get(f.name)
            raw = env.get(name) if name else None
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(name, raw, str(f.type))
        if "database_url" not in values:
            raise ConfigError("missing environment variable: DATABASE_URL")
        values["stripe_prices"] = {
            plan: env[f"STRIPE_PRICE_{plan.upper()}"]
            for plan in PLANS
            if env.get(f"STRIPE_PRICE_{plan.upper()}")
        }
        return cls(**values)


_ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "bind_host": "BIND_HOST",
    "port": "BILLING_PORT",
    "threads": "BILLING_THREADS",
    "base_domain": "BASE_DOMAIN",
    "public_url": "BILLING_PUBLIC_URL",
    "signing_key_file": "LICENSE_SIGNING_KEY_FILE",
    "signing_key_pem": "LICENSE_SIGNING_KEY",
    "signing_key_secret_id": "LICENSE_SIGNING_KEY_SECRET_ID",
    "signing_key_id": "LICENSE_KEY_ID",
    "issuer": "LICENSE_ISSUER",
    "bcrypt_rounds": "BCRYPT_ROUNDS",
    "trial_days": "TRIAL_DAYS",
    "paid_period_days": "PAID_PERIOD_DAYS",
    "grace_days": "PAYMENT_GRACE_DAYS",
    "access_token_minutes": "ACCESS_TOKEN_MINUTES",
    "admin_token": "ADMIN_TOKEN",
    "max_body_bytes": "MAX_BODY_BYTES",
    "stripe_secret_key": "STRIPE_SECRET_KEY",
    "stripe_webhook_secret": "STRIPE_WEBHOOK_SECRET",
    "stripe_api_base": "STRIPE_API_BASE",
    "webhook_tolerance_seconds": "STRIPE_WEBHOOK_TOLERANCE_SECONDS",
    "deploy_timeout_seconds": "DEPLOY_TIMEOUT_SECONDS",
    "deploy_attempts": "DEPLOY_ATTEMPTS",
    "worker_concurrency": "WORKER_CONCURRENCY",
    "suspension_check_cron": "SUSPENSION_CHECK_CRON",
}


def _convert(name: str, raw: str, type_: str):
    try:
        if type_.startswith("int"):
            value: object = int(raw)
        elif type_.startswith("float"):
            value = float(raw)
        elif type_.startswith("Path"):
            return Path(raw)
        else:
            return raw
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {type_.split(' ')[0]}") from None
    if value < 0:  # type: ignore[operator]
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value
