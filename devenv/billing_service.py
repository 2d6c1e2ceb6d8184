"""The billing API and its provisioning worker as local processes, for the demo and for trying it.

`python -m devenv billing start` starts what they need first (the demo's Postgres with a `billing`
database, stripe-mock, the license signing key), then `python -m billing serve` on 127.0.0.1:53000
and `python -m billing worker`, detached, with logs in $IOTISTIC_DATA/billing. The admin token
and the Stripe webhook secret are generated once there (owner-only files). The worker provisions
customers into the local control plane with the backend and passphrase of `scripts/env.sh`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devenv.cluster import LocalCluster
from devenv.ports import default_port, ensure_free
from devenv.postgres import LocalPostgres
from devenv.service_user import ServiceError, tail
from devenv.stripe_mock import LocalStripeMock

ROOT = Path(__file__).resolve().parent.parent
KID = "platform-1"  # the kid reconcile signs tenants.yaml licenses with: one key, one id
PROCESSES = ("serve", "worker")


def _secret_file(path: Path, prefix: str) -> str:
    """A random secret kept in `path` (created once, readable by the owner only)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(prefix + secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


@dataclass
class LocalBilling:
    """The billing API (`serve`) and worker of this checkout, on loopback."""

    data: Path
    port: int = field(default_factory=lambda: default_port("billing"))

    @property
    def dir(self) -> Path:
        return self.data / "billing"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(self.data / "postgres")

    @property
    def stripe_mock(self) -> LocalStripeMock:
        return LocalStripeMock(self.data / "stripe-mock")

    @property
    def signing_key_file(self) -> Path:
        return self.data / "license-keys" / "license-private.pem"

    @property
    def admin_token(self) -> str:
        return _secret_file(self.dir / "admin-token", "adm_")

    @property
    def webhook_secret(self) -> str:
        return _secret_file(self.dir / "webhook-secret", "whsec_")

    def _pid_file(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The pid of the running `python -m billing <name>`, checked against its command line."""
        try:
            pid = int(self._pid_file(name).read_text().strip())
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if state in ("Z", "X"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # our own child: reap it
            return None
        # Empty for an instant between fork and exec: a process we just started.
        if not cmdline:
            return pid
        return pid if cmdline.split(b"\0")[1:4] == [b"-m", b"billing", name.encode()] else None

    def running(self) -> bool:
        return all(self.pid(name) is not None for name in PROCESSES)

    def env(self) -> dict[str, str]:
        cluster = LocalCluster(self.data / "cluster")
        return {
            **os.environ,
            "DATABASE_URL": self.postgres.url("billing"),
            "LICENSE_SIGNING_KEY_FILE": str(self.signing_key_file),
            "LICENSE_KEY_ID": KID,
            "ADMIN_TOKEN": self.admin_token,
            "STRIPE_SECRET_KEY": "sk_test_iotisticdemo",  # stripe-mock wants a test key's shape
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "STRIPE_API_BASE": self.stripe_mock.url,
            "BILLING_PORT": str(self.port),
            "BILLING_PUBLIC_URL": self.url,
            "IOTISTIC_KUBECONFIG": str(cluster.kubeconfig),
        }

    def start(self) -> None:
        """Start the dependencies, then the API and the worker; a second start is a no-op."""
        if self.running():
            return
        self.stop()  # one of the two may have died: start both afresh
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.signing_key_file.exists():
            from licensing.keys import generate_private_key_pem

            self.signing_key_file.parent.mkdir(parents=True, exist_ok=True)
            self.signing_key_file.write_bytes(generate_private_key_pem())
            self.signing_key_file.chmod(0o600)
        self.postgres.start()
        self.postgres.create_database("billing")
        self.stripe_mock.start()
        ensure_free(self.port, "the billing API")
        env = self.env()
        for name in PROCESSES:
            with open(self.dir / f"{name}.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "billing", name],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            self._pid_file(name).write_text(f"{proc.pid}\n")
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in PROCESSES:
                if self.pid(name) is None:
                    self.stop()
                    raise ServiceError(
                        f"billing {name} exited during start:\n{tail(self.dir / f'{name}.log')}"
                    )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise ServiceError(f"the billing API did not answer on {self.url}:\n{tail(self.dir / 'serve.log')}")

    def stop(self) -> None:
        """SIGTERM both (the worker finishes running deploys), then wait until they are gone."""
        pids = [(name, self.pid(name)) for name in PROCESSES]
        for _, pid in pids:
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
        for name, pid in pids:
            deadline = time.monotonic() + 330  # a running deploy may take its whole timeout
            while pid is not None and self.pid(name) is not None and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.2)
            if pid is not None and self.pid(name) is not None:
                os.kill(pid, signal.SIGKILL)
            self._pid_file(name).unlink(missing_ok=True)
