"""API request counting: cheap in-memory increments, flushed to `usage_counters` periodically."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import psycopg

from tenant_app import store


class RequestCounter:
    """Counts requests in memory; `flush` adds them to the database (a crash loses one interval)."""

    def __init__(self, connect: Callable[[], AbstractContextManager[psycopg.Connection]]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._pending = 0

    def increment(self) -> None:
        with self._lock:
            self._pending += 1

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, 0
        if not pending:
            return
        try:
            with self._connect() as conn:
                store.add_usage(conn, "api_requests", pending)
        except Exception:
            with self._lock:  # keep the count for the next try
                self._pending += pending
            raise
