"""`python -m tenant_app.exporter`: Prometheus metrics on EXPORTER_PORT (default 9090)."""

from __future__ import annotations

import sys

from tenant_app.config import ConfigError, Settings
from tenant_app.exporter import create_app
from tenant_app.logs import setup_logging
from tenant_app.serve import run


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging("exporter", settings.log_level)
    run(create_app(settings), settings.bind_host, settings.exporter_port, "exporter", threads=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
