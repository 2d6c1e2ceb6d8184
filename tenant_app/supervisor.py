"""Keep an instance's consumer processes running: `python -m tenant_app.consumer` with CONSUMER_PROCESSES > 1.

Each child is `python -m tenant_app.consumer` on its own broker account and client id
(`Settings.consumer_accounts`); together they share the telemetry subscription, each receiving a
share of the readings. A child that dies (a crash, kill -9, out of memory) is started again under
the same client id, so the broker redelivers what it had not acknowledged and what was routed to
its session meanwhile: nothing is lost, and nothing is stored twice (the message key). SIGTERM or
SIGINT stops every child (each finishes and acknowledges its batch) and then the supervisor; a
child whose supervisor dies gets SIGTERM from the kernel (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from tenant_app.config import Settings

log = logging.getLogger("tenant_app.consumer")

STOP_GRACE_SECONDS = 20.0  # a child's time to finish its batch after SIGTERM
STABLE_SECONDS = 10.0  # a child that ran this long is restarted after the shortest delay


def _die_with_parent() -> None:  # runs in the child between fork and exec
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Start, watch and stop the consumer processes of one instance."""

    def __init__(self, settings: Settings, command: list[str] | None = None) -> None:
        self.settings = settings
        self.command = command or [sys.executable, "-m", "tenant_app.consumer"]
        self.accounts = settings.consumer_accounts()
        self.stopping = threading.Event()
        self.children: dict[int, subprocess.Popen] = {}
        self._started_at: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._restart_at: dict[int, float] = {}

    def _start(self, index: int) -> None:
        username, client_id = self.accounts[index]
        env = {
            **os.environ,
            "CONSUMER_PROCESSES": "1",
            "MQTT_USERNAME": username,
            "CONSUMER_CLIENT_ID": client_id,
        }
        proc = subprocess.Popen(self.command, env=env, preexec_fn=_die_with_parent)
        self.children[index] = proc
        self._started_at[index] = time.monotonic()
        log.info(
            "consumer process started",
            extra={"process_index": index, "client_id": client_id, "pid": proc.pid},
        )

    def run(self) -> int:
        """Run until `stopping` is set (the signal handlers set it); 0 once every child has stopped."""
        for index in range(len(self.accounts)):
            self._start(index)
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for index, proc in self.children.items():
                if index in self._restart_at or proc.poll() is None:
                    continue
                ran = now - self._started_at[index]
                delay = 1.0 if ran >= STABLE_SECONDS else min(30.0, 2 * self._delay.get(index, 0.5))
                self._delay[index] = delay
                self._restart_at[index] = now + delay
                log.warning(
                    "consumer process exited; restarting",
                    extra={"process_index": index, "exit_code": proc.returncode, "restart_in_seconds": delay},
                )
            for index, at in list(self._restart_at.items()):
                if now >= at:
                    del self._restart_at[index]
                    self._start(index)
        self._stop_children()
        return 0

    def _stop_children(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for index, proc in self.children.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("consumer process did not stop; killing it", extra={"process_index": index})
                proc.kill()
                proc.wait()


def supervise(settings: Settings) -> int:
    """`main()` of the consumer when CONSUMER_PROCESSES > 1."""
    supervisor = Supervisor(settings)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stopping.set())
    log.info("consumer supervisor starting", extra={"processes": len(supervisor.accounts)})
    return supervisor.run()
