"""All configuration of the tenant services, read from the environment in one place.

Every service (`api`, `consumer`, `dashboard`, `exporter`, `simulator`) takes a `Settings`; only
`Settings.from_env` looks at environment variables, so tests build `Settings(...)` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlparse

from licensing import DEFAULT_ISSUER

TELEMETRY_TOPIC = "sensor/{device_id}/telemetry"
TELEMETRY_SUBSCRIPTION = "sensor/+/telemetry"
# What the consumer processes of an instance subscribe to: an MQTT 5 shared subscription, so the
# broker hands each reading to one of them (see tenant_app/consumer.py).
TELEMETRY_SHARED_SUBSCRIPTION = f"$share/iotistic-ingest/{TELEMETRY_SUBSCRIPTION}"
CHECKOUT_PATH = "/api/subscriptions/create-checkout-session"
LOGIN_PATH = "/api/customers/login"  # the billing service's sign-in (answers an access token)
# The broker refuses larger publishes (components/mosquitto.py, devenv/mosquitto.py) and the
# consumer dead-letters any that get through: a reading is ~150 bytes.
MQTT_MAX_PAYLOAD_BYTES = 16384
MQTT_WEBSOCKET_PATH = "/mqtt"  # the instance Ingress routes it to Mosquitto's websockets listener


class ConfigError(ValueError):
    """The environment is missing or has a malformed setting; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Settings shared by the tenant services; each field documents its environment variable."""

    customer_id: str  # CUSTOMER_ID
    database_url: str = ""  # DATABASE_URL
    # License: the token itself, or a mounted secret file that may be renewed while running.
    license_key: str | None = None  # IOTISTIC_LICENSE_KEY
    license_key_file: Path | None = None  # IOTISTIC_LICENSE_KEY_FILE (wins over IOTISTIC_LICENSE_KEY)
    license_public_key: str | None = None  # LICENSE_PUBLIC_KEY (PEM text)
    license_public_key_file: Path | None = None  # LICENSE_PUBLIC_KEY_FILE
    license_jwks_url: str | None = None  # LICENSE_JWKS_URL (the billing service's key set)
    license_key_id: str | None = None  # LICENSE_KEY_ID (with a PEM: the only kid accepted)
    license_issuer: str = DEFAULT_ISSUER  # LICENSE_ISSUER
    license_recheck_seconds: float = 1.0  # LICENSE_RECHECK_SECONDS
    # MQTT broker (Mosquitto with the dynamic-security plugin).
    mqtt_host: str = "127.0.0.1"  # MQTT_HOST, or the host of MQTT_BROKER=mqtt://host:port
    mqtt_port: int = 1883  # MQTT_PORT
    mqtt_public_host: str = ""  # MQTT_PUBLIC_HOST: the address devices are told (default mqtt_host)
    mqtt_public_port: int = 0  # MQTT_PUBLIC_PORT (default mqtt_port)
    mqtt_websocket_url: str = ""  # MQTT_WEBSOCKET_URL: wss://{id}.{domain}/mqtt, told to devices
    mqtt_admin_username: str = ""  # MQTT_ADMIN_USERNAME: manages device clients and ACLs (API only)
    mqtt_admin_password: str = ""  # MQTT_ADMIN_PASSWORD
    mqtt_username: str = "iotistic-ingest"  # MQTT_USERNAME: the consumer's own account
    mqtt_password: str = ""  # MQTT_PASSWORD
    # Servers.
    bind_host: str = "127.0.0.1"  # BIND_HOST (0.0.0.0 in the container images)
    api_port: int = 3001  # API_PORT
    dashboard_port: int = 80  # DASHBOARD_PORT
    exporter_port: int = 9090  # EXPORTER_PORT
    api_url: str = "http://127.0.0.1:3001"  # API_URL: where the dashboard reaches the API
    billing_url: str = ""  # BILLING_URL: the billing service (checkout sessions)
    dashboard_refresh_seconds: int = 10  # DASHBOARD_REFRESH_SECONDS: live chart refresh
    max_body_bytes: int = 1024 * 1024  # MAX_BODY_BYTES: larger request bodies answer 413
    api_key: str = ""  # IOTISTIC_API_KEY: the simulator's credential for registering devices
    # Background jobs.
    retention_interval_seconds: float = 3600.0  # RETENTION_INTERVAL_SECONDS
    usage_flush_seconds: float = 5.0  # USAGE_FLUSH_SECONDS: API request counts to the database
    active_device_window_seconds: int = 86400  # ACTIVE_DEVICE_WINDOW_SECONDS (exporter)
    # MQTT consumer.
    consumer_client_id: str = ""  # CONSUMER_CLIENT_ID (default iotistic-ingest-<customer>)
    consumer_processes: int = 1  # CONSUMER_PROCESSES: consumer processes sharing the subscription
    consumer_profile_dir: str = ""  # CONSUMER_PROFILE_DIR: write cProfile stats there (bench/ingest.py)
    consumer_batch_size: int = 2000  # CONSUMER_BATCH_SIZE: rows per transaction at most
    consumer_batch_ms: int = 50  # CONSUMER_BATCH_MS: how long a batch may wait to fill
    consumer_receive_maximum: int = 10000  # CONSUMER_RECEIVE_MAXIMUM: unacked messages in flight
    consumer_session_expiry_seconds: int = 7 * 86400  # CONSUMER_SESSION_EXPIRY_SECONDS
    dead_letter_max_rows: int = 10_000  # DEAD_LETTER_MAX_ROWS: only the newest are kept
    startup_retry_max_seconds: float = 30.0  # STARTUP_RETRY_MAX_SECONDS: back-off cap while waiting
    log_level: str = "INFO"  # LOG_LEVEL

    def __post_init__(self) -> None:
        # Defaults that depend on other fields.
        if not self.mqtt_public_host:
            object.__setattr__(self, "mqtt_public_host", self.mqtt_host)
        if not self.mqtt_public_port:
            object.__setattr__(self, "mqtt_public_port", self.mqtt_port)
        if not self.consumer_client_id:
            object.__setattr__(self, "consumer_client_id", f"iotistic-ingest-{self.customer_id}")
        if not 1 <= self.consumer_processes <= 16:
            raise ConfigError(f"CONSUMER_PROCESSES={self.consumer_processes} is not between 1 and 16")

    def consumer_accounts(self) -> list[tuple[str, str]]:
        """(broker username, client id) of each consumer process, each account bound to its id.

        Process 0 keeps MQTT_USERNAME and CONSUMER_CLIENT_ID as they are; process i > 0 adds `-i`
        to both. `tenant_app.provision` creates the accounts, the consumer's supervisor uses them.
        """
        base_user, base_id = self.mqtt_username, self.consumer_client_id
        return [(base_user, base_id)] + [
            (f"{base_user}-{i}", f"{base_id}-{i}") for i in range(1, self.consumer_processes)
        ]

    def with_(self, **changes) -> Settings:
        """A copy with some fields changed (derived defaults are recomputed only if left empty)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, require_database: bool = True) -> Settings:
        """Read every setting from `env` (default os.environ); ConfigError names what is wrong."""
        env = os.environ if env is None else env
        values: dict = {}
        for f in fields(cls):
            name = _ENV_NAMES[f.name]
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(name, raw, f.type)
        broker = env.get("MQTT_BROKER")
        if broker and "mqtt_host" not in values:
            parsed = urlparse(broker if "://" in broker else f"mqtt://{broker}")
            values["mqtt_host"] = parsed.hostname or "127.0.0.1"
            values.setdefault("mqtt_port", parsed.port or 1883)
        missing = [n for n, k in (("CUSTOMER_ID", "customer_id"),) if k not in values]
        if require_database and "database_url" not in values:
            missing.append("DATABASE_URL")
        if missing:
            raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
        return cls(**values)


_ENV_NAMES = {
    "customer_id": "CUSTOMER_ID",
    "database_url": "DATABASE_URL",
    "license_key": "IOTISTIC_LICENSE_KEY",
    "license_key_file": "IOTISTIC_LICENSE_KEY_FILE",
    "license_public_key": "LICENSE_PUBLIC_KEY",
    "license_public_key_file": "LICENSE_PUBLIC_KEY_FILE",
    "license_jwks_url": "LICENSE_JWKS_URL",
    "license_key_id": "LICENSE_KEY_ID",
    "license_issuer": "LICENSE_ISSUER",
    "license_recheck_seconds": "LICENSE_RECHECK_SECONDS",
    "mqtt_host": "MQTT_HOST",
    "mqtt_port": "MQTT_PORT",
    "mqtt_public_host": "MQTT_PUBLIC_HOST",
    "mqtt_public_port": "MQTT_PUBLIC_PORT",
    "mqtt_websocket_url": "MQTT_WEBSOCKET_URL",
    "mqtt_admin_username": "MQTT_ADMIN_USERNAME",
    "mqtt_admin_password": "MQTT_ADMIN_PASSWORD",
    "mqtt_username": "MQTT_USERNAME",
    "mqtt_password": "MQTT_PASSWORD",
    "bind_host": "BIND_HOST",
    "api_port": "API_PORT",
    "dashboard_port": "DASHBOARD_PORT",
    "exporter_port": "EXPORTER_PORT",
    "api_url": "API_URL",
    "billing_url": "BILLING_URL",
    "dashboard_refresh_seconds": "DASHBOARD_REFRESH_SECONDS",
    "max_body_bytes": "MAX_BODY_BYTES",
    "api_key": "IOTISTIC_API_KEY",
    "retention_interval_seconds": "RETENTION_INTERVAL_SECONDS",
    "usage_flush_seconds": "USAGE_FLUSH_SECONDS",
    "active_device_window_seconds": "ACTIVE_DEVICE_WINDOW_SECONDS",
    "consumer_client_id": "CONSUMER_CLIENT_ID",
    "consumer_processes": "CONSUMER_PROCESSES",
    "consumer_profile_dir": "CONSUMER_PROFILE_DIR",
    "consumer_batch_size": "CONSUMER_BATCH_SIZE",
    "consumer_batch_ms": "CONSUMER_BATCH_MS",
    "consumer_receive_maximum": "CONSUMER_RECEIVE_MAXIMUM",
    "consumer_session_expiry_seconds": "CONSUMER_SESSION_EXPIRY_SECONDS",
    "dead_letter_max_rows": "DEAD_LETTER_MAX_ROWS",
    "startup_retry_max_seconds": "STARTUP_RETRY_MAX_SECONDS",
    "log_level": "LOG_LEVEL",
}


def _convert(name: str, raw: str, type_: str):
    try:
        if type_.startswith("int"):
            return int(raw)
        if type_.startswith("float"):
            return float(raw)
        if type_.startswith("Path"):
            return Path(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {type_.split(' ')[0]}") from None
    return raw
