"""`python -m tenant_app.dashboard`: the dashboard on DASHBOARD_PORT (default 80)."""

from __future__ import annotations

import sys

from tenant_app.config import ConfigError, Settings
from tenant_app.dashboard import create_app
from tenant_app.logs import setup_logging
from tenant_app.serve import run


def main() -> int:
    try:
        settings = Settings.from_env(require_database=False)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging("dashboard", settings.log_level)
    run(create_app(settings), settings.bind_host, settings.dashboard_port, "dashboard", threads=4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
