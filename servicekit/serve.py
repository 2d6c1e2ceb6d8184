"""Serve a WSGI app with waitress (a production server) until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal

from waitress import serve

log = logging.getLogger(__name__)


def stop_on_sigterm(signum, frame) -> None:
    """Kubernetes stops pods with SIGTERM; turning it into SystemExit lets callers' `finally`
    blocks run (the API flushes its request counts there)."""
    raise SystemExit(0)


def run(app, host: str, port: int, name: str, threads: int = 8) -> None:
    """Serve `app` on host:port; returns after SIGTERM or SIGINT."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    log.info("listening", extra={"service": name, "host": host, "port": port})
    try:
        serve(app, host=host, port=port, threads=threads, ident=f"iotistic-{name}")
    except (SystemExit, KeyboardInterrupt):
        log.info("stopping", extra={"service": name})
