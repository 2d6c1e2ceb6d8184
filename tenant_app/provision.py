"""`python -m tenant_app.provision`: one-shot set-up before the services start (an init container).

Creates the database schema and the consumer's broker account (MQTT_USERNAME/MQTT_PASSWORD) with
the admin account (MQTT_ADMIN_USERNAME/MQTT_ADMIN_PASSWORD). Safe to run again.
"""

from __future__ import annotations

import sys

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


def main() -> int:
    try:
        provision(Settings.from_env())
    except (ConfigError, DynsecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("provisioned: database schema and consumer broker account")
    return 0


if __name__ == "__main__":
    sys.exit(main())
