"""`python -m tenant_app.exporter`: Prometheus metrics on EXPORTER_PORT (default 9090)."""

from __future__ import annotations

import sys

from servicekit.serve import run
from tenant_app.exporter import create_app
from tenant_app.logs import start_service


def main() -> int:
    settings = start_service("exporter")
    run(create_app(settings), settings.bind_host, settings.exporter_port, "exporter", threads=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
