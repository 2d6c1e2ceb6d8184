"""`python -m tenant_app.dashboard`: the dashboard on DASHBOARD_PORT (default 80)."""

from __future__ import annotations

import sys

from servicekit.serve import run
from tenant_app.dashboard import create_app
from tenant_app.logs import start_service


def main() -> int:
    settings = start_service("dashboard", require_database=False)
    run(create_app(settings), settings.bind_host, settings.dashboard_port, "dashboard", threads=4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
