"""`python -m tenant_app.api`: the API service on API_PORT (default 3001)."""

from __future__ import annotations

import sys

from tenant_app.api import create_app
from tenant_app.config import ConfigError, Settings
from tenant_app.logs import setup_logging
from tenant_app.serve import run


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging("api", settings.log_level)
    app = create_app(settings)
    try:
        run(app, settings.bind_host, settings.api_port, "api")
    finally:
        app.extensions["iotistic"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
