"""Network namespaces from Python: open sockets inside one without moving the whole process.

A socket belongs to the namespace its thread was in when the socket was created; `setns(2)` on
the calling thread switches that, and switching back leaves every other thread untouched. So the
node bridge and the tests can listen or connect inside the real node's namespace while living on
the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(netns_path: str | os.PathLike) -> Iterator[None]:
    """Run the body with this thread in the namespace bound at `netns_path` (/run/netns/NAME)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(os.fspath(netns_path), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def socket_in(netns_path: str | os.PathLike, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM):
    """A new socket that lives in the namespace at `netns_path`."""
    with entered(netns_path):
        return socket.socket(family, kind)


def connect_in(netns_path: str | os.PathLike, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection opened from inside the namespace (raises OSError like create_connection)."""
    sock = socket_in(netns_path)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def http_get_in(netns_path: str | os.PathLike, host: str, port: int, path: str, timeout: float = 2.0) -> int:
    """Status code of a plain HTTP GET made from inside the namespace; 0 when nothing answers."""
    try:
        sock = connect_in(netns_path, host, port, timeout)
    except OSError:
        return 0
    with sock:
        try:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            first = sock.recv(64).split(b"\r\n", 1)[0].split()
            return int(first[1]) if len(first) > 1 else 0
        except (OSError, ValueError):
            return 0
