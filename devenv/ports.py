"""Loopback port checks, so a busy port is reported by number instead of a confusing crash."""

from __future__ import annotations

import socket
import time


class PortInUse(RuntimeError):
    """A service could not start because its port is taken."""


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def ensure_free(port: int, service: str, host: str = "127.0.0.1") -> None:
    """Raise PortInUse naming the port and the service when host:port is already taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the servers themselves: TIME_WAIT leftovers of a previous run do not count as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUse(
                f"port {port} on {host} is already in use, so {service} cannot start there "
                f"(free it or choose another port)"
            ) from e


def wait_listening(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    """Poll until host:port accepts connections or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port, host):
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    """A currently free loopback port chosen by the kernel (for tests that run side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
