"""A real PostgreSQL 15 server from Debian's package, in a project-local data folder on loopback."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devenv.ports import default_port, ensure_free, is_listening
from devenv.service_user import ServiceError, as_service_user, check_traversable, tail

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class LocalPostgres:
    """One Postgres cluster: `start()` is idempotent, `stop()` leaves no process behind."""

    data_dir: Path
    port: int = field(default_factory=lambda: default_port("postgres"))
    user: str = "postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for the superuser over loopback TCP (password authentication)."""
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*as_service_user(self.user), str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=check)

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def running(self) -> bool:
        return self.initialized() and self._pg_ctl("status", check=False).returncode == 0

    def init(self) -> None:
        """Create the cluster with a generated superuser password (scram-sha-256 over TCP)."""
        if self.initialized():
            return
        if not (PG_BIN / "initdb").exists():
            raise ServiceError(
                "PostgreSQL 15 is not installed: apt-get install postgresql (or run scripts/setup)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_traversable(self.data_dir, self.user)
        self.socket_dir.mkdir(exist_ok=True)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        pwfile = self.data_dir / "initdb.pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            uid = pwd.getpwnam(self.user).pw_uid
            for p in (self.data_dir, self.socket_dir, pwfile):
                os.chown(p, uid, -1)
        try:
            subprocess.run(
                [
                    *as_service_user(self.user),
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        except subprocess.CalledProcessError as e:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise ServiceError(f"postgres initdb failed:\n{e.stdout}\n{e.stderr}") from e
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> None:
        """Start on 127.0.0.1:port; a second start while running is a no-op."""
        self.init()
        if self.running():
            return
        ensure_free(self.port, "postgres")
        opts = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        res = self._pg_ctl("-w", "-t", "60", "-l", str(self.log_file), "-o", opts, "start", check=False)
        if res.returncode != 0 or not is_listening(self.port):
            raise ServiceError(
                f"postgres failed to start on port {self.port}. Last log lines:\n{tail(self.log_file)}"
            )

    def stop(self) -> None:
        if self.running():
            self._pg_ctl("-w", "-m", "fast", "stop", check=False)

    def create_database(self, name: str) -> str:
        """Create `name` if missing and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
