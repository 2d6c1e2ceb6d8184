"""The start of every tenant service: settings from the environment, then JSON logs (servicekit)."""

from __future__ import annotations

import sys

from servicekit.logs import setup_logging
from tenant_app.config import ConfigError, Settings


def start_service(service: str, require_database: bool = True) -> Settings:
    """Settings from the environment and structured logs for `service`; a bad environment exits 2.

    The start of every `python -m tenant_app.<service>`: the message names the variable at fault.
    """
    try:
        settings = Settings.from_env(require_database=require_database)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(service, settings.log_level)
    return settings
