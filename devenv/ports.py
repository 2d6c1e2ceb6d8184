"""Loopback port checks, so a busy port is reported by number instead of a confusing crash."""

from __future__ import annotations

import contextlib
import os
import socket
import time

# The fixed loopback ports of `python -m devenv`. IOTISTIC_PORT_OFFSET shifts them all (a second
# checkout beside the first), IOTISTIC_PORT_<NAME> (e.g. IOTISTIC_PORT_KUBE_APISERVER) sets one.
DEFAULT_PORTS = {
    "postgres": 55432,
    "mosquitto": 51883,
    "mosquitto-ws": 59001,
    "etcd": 52379,
    "etcd-peer": 52380,
    "kube-apiserver": 56443,
    "kube-controller-manager": 50257,
    "kube-scheduler": 50259,
    "kwok": 50247,
    "stripe-mock": 52111,
    "billing": 53000,
}


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


class PortConfigError(ValueError):
    """An IOTISTIC_PORT_* variable is not a usable port number."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise PortConfigError(f"{name}={raw!r} is not a port number (0-65535)")
    return int(raw)


def default_port(name: str) -> int:
    """devenv's port for `name`: IOTISTIC_PORT_<NAME>, else the default plus IOTISTIC_PORT_OFFSET."""
    own = f"IOTISTIC_PORT_{name.upper().replace('-', '_')}"
    port = _env_int(own, 0) or DEFAULT_PORTS[name] + _env_int("IOTISTIC_PORT_OFFSET", 0)
    if not 0 < port <= 65535:
        raise PortConfigError(f"port {port} for {name} is out of range (check IOTISTIC_PORT_OFFSET)")
    return port


def reserved_ports() -> set[int]:
    """devenv's fixed ports, unshifted and as configured now: never handed out by free_port()."""
    reserved = set(DEFAULT_PORTS.values())
    with contextlib.suppress(PortConfigError):  # reported by the service that uses the variable
        reserved |= {default_port(name) for name in DEFAULT_PORTS}
    return reserved


def free_port() -> int:
    """A currently free loopback port chosen by the kernel (for tests that run side by side).

    Never one of devenv's fixed ports: a test's throw-away service must not take the port the
    user's own `python -m devenv ... start` needs a minute later.
    """
    reserved = reserved_ports()
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in reserved:
            return port
