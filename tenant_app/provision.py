"""`python -m tenant_app.provision`: one-shot set-up before the services start (an init container).

Creates the database schema and the consumer's broker account (MQTT_USERNAME/MQTT_PASSWORD) with
the admin account (MQTT_ADMIN_USERNAME/MQTT_ADMIN_PASSWORD). Safe to run again. A fresh instance
starts its pods together, so the API pod's init step usually runs before Postgres and Mosquitto
answer: it waits for them (up to WAIT_SECONDS) instead of crashing into Kubernetes' restart
back-off, which made a new instance take ~40 s longer to become Ready.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import psycopg

from tenant_app.config import ConfigError, Settings
from tenant_app.db import ensure_schema
from tenant_app.dynsec import DynsecAdmin, DynsecError


def provision(settings: Settings) -> None:
    """Schema and consumer account; raises on failure."""
    ensure_schema(settings.database_url)
    if not settings.mqtt_admin_username or not settings.mqtt_password:
        raise ConfigError("MQTT_ADMIN_USERNAME, MQTT_ADMIN_PASSWORD and MQTT_PASSWORD are needed")
    DynsecAdmin(
        settings.mqtt_host, settings.mqtt_port, settings.mqtt_admin_username, settings.mqtt_admin_password
    ).ensure_consumer(settings.mqtt_username, settings.mqtt_password)


WAIT_SECONDS = 120.0
RETRY_SECONDS = 2.0


def unreachable(e: Exception) -> bool:
    """True for a dependency that does not answer yet (worth waiting for), not one that refuses."""
    if isinstance(e, psycopg.OperationalError):
        return True
    return isinstance(e, DynsecError) and isinstance(e.__cause__, OSError)


def provision_when_ready(
    settings: Settings,
    wait: float = WAIT_SECONDS,
    attempt: Callable[[Settings], None] = provision,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """provision(), retried while the database or the broker is unreachable, for `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            attempt(settings)
            return
        except (psycopg.OperationalError, DynsecError) as e:
            if not unreachable(e) or time.monotonic() >= deadline:
                raise
            print(f"waiting for the database and the broker: {str(e).strip()}", file=sys.stderr, flush=True)
            sleep(RETRY_SECONDS)


def main() -> int:
    try:
        provision_when_ready(Settings.from_env())
    except (ConfigError, DynsecError, psycopg.OperationalError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("provisioned: database schema and consumer broker account")
    return 0


if __name__ == "__main__":
    sys.exit(main())
