"""Structured logs: one JSON object per line on stderr, with any `extra={...}` fields included."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from tenant_app.config import ConfigError, Settings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as JSON: time, level, logger, message, then the record's extra fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines (called once by each `__main__`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Werkzeug/waitress access lines would duplicate our own request log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


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
