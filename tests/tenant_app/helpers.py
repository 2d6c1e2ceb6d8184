"""Small helpers for the tenant app tests: HTTP calls, WSGI servers in threads, polling."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from werkzeug.serving import make_server


@dataclass
class Resp:
    status: int
    body: object
    text: str
    headers: dict


def http(
    method: str,
    url: str,
    body: object | None = None,
    timeout: float = 10,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Resp:
    """One HTTP request; JSON in and (when possible) out; never raises for 4xx/5xx.

    `token` is sent as `Authorization: Bearer`; `raw` is sent as is (Content-Type JSON) instead of
    `body`, for bodies json.dumps cannot write (NaN, lone surrogates, broken UTF-8).
    """
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, headers = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        status, raw, headers = e.code, e.read(), dict(e.headers)
    text = raw.decode(errors="replace")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    return Resp(status, parsed, text, headers)


class Server:
    """A WSGI app served for real on a free loopback port, in a thread.

    `call` sends requests with the server's default credential (`token`), like a signed-in user.
    """

    def __init__(self, app, token: str | None = None) -> None:
        self.app = app
        self.token = token
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def call(self, method: str, path: str, body: object | None = None, **kw) -> Resp:
        """`http` against this server, signed in with its token unless `token=` says otherwise."""
        kw.setdefault("token", self.token)
        return http(method, self.url + path, body, **kw)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(5)


def wait_for(
    predicate: Callable[[], object], timeout: float = 15, interval: float = 0.05, what: str = "condition"
):
    """Poll until `predicate()` is truthy; return its value or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
