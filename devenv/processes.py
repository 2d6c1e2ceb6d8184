"""One control-plane process: started detached, found again by its pid file, stopped for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devenv.service_user import ServiceError, tail


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM `pid`, wait up to `timeout` for it to exit (reaping it if it is our child), then
    SIGKILL it. Local services use it so none lingers, and none becomes a zombie."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Component:
    """One control-plane process: its command line, pid file and log, and how to tell it is ready."""

    name: str
    argv: list[str]
    pid_file: Path
    log_file: Path
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    # The program a running process shows as its argv[0], when argv starts with a wrapper that
    # execs it (e.g. nsenter for the real node's processes).
    exe: str = ""

    @property
    def home(self) -> Path:
        """The cluster's data folder, which every component's command line names."""
        return self.pid_file.parent.parent

    def pid(self) -> int | None:
        """The pid of this component when it runs (checked against its command line, not just the pid)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            return None
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap our own child so it does not linger as a zombie
            return None
        # A stale pid file may point at an unrelated process that reused the pid, or at the same
        # binary run for another cluster. (The command line is still empty for an instant right
        # after the fork, so empty counts as ours.)
        expected = self.exe or self.argv[0]
        if cmdline[0] and (
            cmdline[0] not in (expected, self.argv[0]) or not any(str(self.home) in a for a in cmdline)
        ):
            return None
        return pid

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.pid_file.parent,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")

    def failure(self, what: str) -> ServiceError:
        return ServiceError(f"{self.name} {what}. Last lines of {self.log_file}:\n{tail(self.log_file, 25)}")

    def wait_ready(self, deadline: float) -> None:
        """Block until ready(); a process that exits or a timeout raises ServiceError naming it."""
        while True:
            if self.pid() is None:
                raise self.failure("exited during start")
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise self.failure("did not become ready in time")
            time.sleep(0.2)

    def signal(self, sig: int) -> int | None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pid

    def wait_gone(self, timeout: float) -> None:
        """Wait for the process to exit, then SIGKILL it; reaps it when it is our child."""
        deadline = time.monotonic() + timeout
        while self.pid() is not None:
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
                time.sleep(0.2)
                continue
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
