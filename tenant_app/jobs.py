"""Periodic background work in a daemon thread (retention, usage flushes)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Call `fn` every `interval` seconds until stopped; a failing call is logged and retried next time."""

    def __init__(
        self, name: str, fn: Callable[[], object], interval: float, *, run_at_stop: bool = False
    ) -> None:
        self.name = name
        self._fn = fn
        self._interval = interval
        self._run_at_stop = run_at_stop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _call(self) -> None:
        try:
            self._fn()
        except Exception:  # the job must survive a database hiccup
            log.exception("background job failed", extra={"job": self.name})

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._call()
            self._stop.wait(max(0.05, self._interval - (time.monotonic() - started)))

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._run_at_stop:
            self._call()
