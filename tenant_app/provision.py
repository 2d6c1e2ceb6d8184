"""`python -m tenant_app.provision`: one-shot set-up before the services start (an init container).

Creates the database schema and the consumer's broker accounts with the admin account
(MQTT_ADMIN_USERNAME/MQTT_ADMIN_PASSWORD): MQTT_USERNAME/MQTT_PASSWORD bound to CONSUMER_CLIENT_ID,
and one more per extra CONSUMER_PROCESSES (both names suffixed -1, -2...). Binds device accounts
created before client-id binding existed to their own client id. Waits (one log line per attempt)
while the database or the broker is not up yet. Safe to run again.
"""

from __future__ import annotations

import logging
import sys
import time

from tenant_app import store
from tenant_app.config import ConfigError, Settings
from tenant_app.db import connect, wait_for_database
from tenant_app.dynsec import DynsecAdmin, DynsecError
from tenant_app.logs import start_service

log = logging.getLogger("tenant_app.provision")


def provision(settings: Settings, *, attempts: int = 0) -> None:
    """Schema, consumer accounts and device client ids; retries the broker (`attempts` 0: forever)."""
    if not settings.mqtt_admin_username or not settings.mqtt_password:
        raise ConfigError("MQTT_ADMIN_USERNAME, MQTT_ADMIN_PASSWORD and MQTT_PASSWORD are needed")
    wait_for_database(settings.database_url, max_delay=settings.startup_retry_max_seconds)
    with connect(settings.database_url) as conn:
        devices = store.device_ids(conn)
    admin = DynsecAdmin(
        settings.mqtt_host, settings.mqtt_port, settings.mqtt_admin_username, settings.mqtt_admin_password
    )
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            for username, client_id in settings.consumer_accounts():
                admin.ensure_consumer(username, settings.mqtt_password, client_id)
            admin.bind_client_ids(devices)
            return
        except DynsecError as e:
            if attempts and attempt >= attempts:
                raise
            log.warning(
                "broker unavailable; retrying",
                extra={
                    "broker": f"{settings.mqtt_host}:{settings.mqtt_port}",
                    "error": str(e),
                    "attempt": attempt,
                },
            )
            time.sleep(delay)
            delay = min(settings.startup_retry_max_seconds, delay * 2)


def main() -> int:
    settings = start_service("provision")
    try:
        provision(settings)
    except (ConfigError, DynsecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("provisioned: database schema and consumer broker account")
    return 0


if __name__ == "__main__":
    sys.exit(main())
