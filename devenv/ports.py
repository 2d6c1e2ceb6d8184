"""Loopback port checks, so a busy port is reported by number instead of a confusing crash."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

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


# Linux keeps a closed connection's port in TIME_WAIT for a fixed 60 s (TCP_TIMEWAIT_LEN).
TIME_WAIT_SECONDS = 60.0
_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def port_states(port: int) -> list[str]:
    """The TCP states of every socket whose local port is `port` (Linux /proc; [] elsewhere)."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                states.append(_TCP_STATES.get(fields[3], fields[3]))
    return states


def _can_bind(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the servers themselves: a listener's own TIME_WAIT leftovers do not block the bind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_free(
    port: int,
    service: str,
    host: str = "127.0.0.1",
    *,
    time_wait_timeout: float = TIME_WAIT_SECONDS + 5,
    progress: Callable[[str], None] = _say,
) -> None:
    """Return once `service` can listen on host:port; PortInUse naming the port and service if not.

    A port held only by TIME_WAIT connections is not "in use": it is waited for (at most
    `time_wait_timeout`, with a progress line). That happens when an earlier run's outgoing
    connection got this port as its ephemeral source port: such a TIME_WAIT blocks every bind,
    SO_REUSEADDR or not, until the kernel drops it.
    """
    if _can_bind(port, host):
        return
    states = port_states(port)
    if states and all(state == "TIME_WAIT" for state in states):
        progress(
            f"port {port} ({service}): only {len(states)} TIME_WAIT connection(s) of an earlier run hold it; "
            f"waiting up to {time_wait_timeout:.0f} s for the kernel to release it"
        )
        began = time.monotonic()
        deadline = began + time_wait_timeout
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if _can_bind(port, host):
                progress(f"port {port} ({service}): released after {time.monotonic() - began:.0f} s")
                return
        states = port_states(port) or states
    if "LISTEN" in states:
        held = "a server listens on it"
    elif states:
        held = "connections in " + ", ".join(sorted(set(states)))
    else:
        held = "held by another process"
    raise PortInUse(
        f"port {port} on {host} is already in use ({held}), so {service} cannot start there "
        f"(free it or choose another port)"
    )


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


def _port_value(name: str, raw: str) -> int:
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise PortConfigError(f"{name}={raw!r} is not a port number (0-65535)")
    return int(raw)


def _env_int(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(name, "").strip()
    return _port_value(name, raw) if raw else default


def port_variable(name: str) -> str:
    """The environment variable that sets one service's port: IOTISTIC_PORT_<NAME>."""
    return f"IOTISTIC_PORT_{name.upper().replace('-', '_')}"


def resolve_ports(
    env: Mapping[str, str] | None = None,
    *,
    offset: int | None = None,
    overrides: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Every devenv port: `overrides` (flags) win, then IOTISTIC_PORT_<NAME>, then default + offset.

    `offset` (a flag) wins over IOTISTIC_PORT_OFFSET.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(DEFAULT_PORTS)
    if unknown:
        raise PortConfigError(
            f"unknown service {sorted(unknown)[0]!r}; services are {', '.join(DEFAULT_PORTS)}"
        )
    shift = offset if offset is not None else _env_int("IOTISTIC_PORT_OFFSET", 0, env)
    ports = {}
    for name, default in DEFAULT_PORTS.items():
        port = overrides.get(name) or _env_int(port_variable(name), 0, env) or default + shift
        if not 0 < port <= 65535:
            raise PortConfigError(f"port {port} for {name} is out of range (check the port offset)")
        ports[name] = port
    return ports


def parse_port_assignment(text: str) -> tuple[str, int]:
    """`NAME=PORT` (a --port flag) -> (name, port); PortConfigError naming what is wrong."""
    name, sep, raw = text.partition("=")
    if not sep or name not in DEFAULT_PORTS:
        raise PortConfigError(
            f"--port {text!r}: expected NAME=PORT with NAME one of {', '.join(DEFAULT_PORTS)}"
        )
    port = _port_value(f"--port {name}", raw)
    if port == 0:
        raise PortConfigError(f"--port {text!r}: port 0 is not a fixed port")
    return name, port


def default_port(name: str) -> int:
    """devenv's port for `name`: IOTISTIC_PORT_<NAME>, else the default plus IOTISTIC_PORT_OFFSET."""
    return resolve_ports()[name]


def reserved_ports() -> set[int]:
    """devenv's fixed ports, unshifted and as configured now: never handed out by free_port()."""
    reserved = set(DEFAULT_PORTS.values())
    with contextlib.suppress(PortConfigError):  # reported by the service that uses the variable
        reserved |= set(resolve_ports().values())
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
