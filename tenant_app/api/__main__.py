"""`python -m tenant_app.api`: the API service on API_PORT (default 3001)."""

from __future__ import annotations

import sys

from servicekit.serve import run
from tenant_app.api import create_app
from tenant_app.logs import start_service


def main() -> int:
    settings = start_service("api")
    app = create_app(settings)
    try:
        run(app, settings.bind_host, settings.api_port, "api")
    finally:
        app.extensions["iotistic"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
