"""`python -m tenant_app.api`: the API service on API_PORT (default 3001)."""

from __future__ import annotations

import signal
import sys

from servicekit.serve import run, stop_on_sigterm
from tenant_app.api import create_app
from tenant_app.logs import start_service


def main() -> int:
    settings = start_service("api")
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # also while waiting for the database
    try:
        app = create_app(settings)
    except (SystemExit, KeyboardInterrupt):
        return 0
    try:
        run(app, settings.bind_host, settings.api_port, "api")
    finally:
        app.extensions["iotistic"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
