"""stripe-mock, Stripe's own API mock (built by toolchain/build-stripe-mock.sh), on loopback, and
webhook events signed exactly as Stripe signs them.

stripe-mock validates every request against Stripe's real OpenAPI spec and answers with
fixtures; it is stateless and never sends webhooks, so the tests and the demo play Stripe's
webhook sender themselves with `signed_event` (HMAC-SHA256 of "<t>.<body>" with the endpoint
secret, header `Stripe-Signature: t=<t>,v1=<hex>`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from devenv.ports import default_port, ensure_free, wait_listening
from devenv.processes import terminate
from devenv.service_user import ServiceError, tail

ROOT = Path(__file__).resolve().parent.parent


def default_binary() -> Path:
    return Path(os.environ.get("IOTISTIC_CACHE", ROOT / ".cache")) / "bin" / "stripe-mock"


@dataclass
class LocalStripeMock:
    """One stripe-mock on 127.0.0.1:port (HTTP only); `start()` is idempotent."""

    data_dir: Path
    port: int = field(default_factory=lambda: default_port("stripe-mock"))
    binary: Path = field(default_factory=default_binary)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "stripe-mock.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "stripe-mock.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except (OSError, ValueError):
            return None
        return pid if cmdline.endswith(b"stripe-mock") else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        if self.running():
            return
        if not self.binary.exists():
            raise ServiceError(
                f"stripe-mock is not built at {self.binary}: run toolchain/build-stripe-mock.sh"
            )
        ensure_free(self.port, "stripe-mock")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                # HTTPS (which it would otherwise open on all interfaces) goes to a socket file.
                [
                    str(self.binary),
                    "-http-addr",
                    f"127.0.0.1:{self.port}",
                    "-https-unix",
                    str(self.data_dir / "https.sock"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        if not wait_listening(self.port, 30) or proc.poll() is not None:
            self.stop()
            raise ServiceError(f"stripe-mock failed to start on port {self.port}:\n{tail(self.log_file)}")

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        terminate(pid)
        self.pid_file.unlink(missing_ok=True)


def stripe_event(event_type: str, obj: dict, created: int | None = None, event_id: str | None = None) -> dict:
    """An event as Stripe delivers it (`id`, `type`, `created`, `data.object`)."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": event_type,
        "created": created or int(time.time()),
        "data": {"object": obj},
    }


def signed_event(event: dict, secret: str, at: int | None = None) -> tuple[bytes, str]:
    """The raw body and `Stripe-Signature` header Stripe would send for `event`."""
    body = json.dumps(event).encode()
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={t},v1={mac}"
