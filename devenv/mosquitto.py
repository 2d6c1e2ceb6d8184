"""A real Mosquitto 2 broker from Debian's package, with the dynamic-security plugin, on loopback.

Clients, roles and ACLs are managed at run time through `$CONTROL/dynamic-security/v1`, so the
tenant app can create per-device credentials without restarting the broker. Anonymous access is off.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devenv.ports import default_port, ensure_free, is_listening, wait_listening
from devenv.processes import terminate
from devenv.service_user import ServiceError, check_traversable, tail
from tenant_app.config import MQTT_MAX_PAYLOAD_BYTES

MOSQUITTO = Path("/usr/sbin/mosquitto")
DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN_USER = "iotistic-admin"


@dataclass
class LocalMosquitto:
    """One broker: MQTT on `port`, MQTT over websockets on `ws_port`, both on 127.0.0.1."""

    data_dir: Path
    port: int = field(default_factory=lambda: default_port("mosquitto"))
    ws_port: int = field(default_factory=lambda: default_port("mosquitto-ws"))
    user: str = "mosquitto"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def dynsec_file(self) -> Path:
        return self.data_dir / "dynamic-security.json"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "mosquitto.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "mosquitto.log"

    @property
    def admin_password_file(self) -> Path:
        return self.data_dir / "admin-password"

    @property
    def admin_password(self) -> str:
        return self.admin_password_file.read_text().strip()

    def _write_config(self) -> None:
        self.config_file.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous false",
                    f"listener {self.port} 127.0.0.1",
                    f"listener {self.ws_port} 127.0.0.1",
                    "protocol websockets",
                    # The same caps as the instance's broker (components/mosquitto.py).
                    f"message_size_limit {MQTT_MAX_PAYLOAD_BYTES}",
                    "max_packet_size 65536",
                    "persistence true",
                    f"persistence_location {self.data_dir}/",
                    "autosave_interval 60",
                    f"log_dest file {self.log_file}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    f"plugin {DYNSEC_PLUGIN}",
                    f"plugin_opt_config_file {self.dynsec_file}",
                    "",
                ]
            )
        )

    def init(self) -> None:
        """Write the config and a dynamic-security file whose admin can manage clients and ACLs."""
        if not MOSQUITTO.exists():
            raise ServiceError("Mosquitto is not installed: apt-get install mosquitto (or run scripts/setup)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_traversable(self.data_dir, self.user)
        self._write_config()
        if not self.dynsec_file.exists():
            self.admin_password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.admin_password_file.chmod(0o600)
            subprocess.run(
                ["mosquitto_ctrl", "dynsec", "init", str(self.dynsec_file), ADMIN_USER, self.admin_password],
                capture_output=True,
                text=True,
                check=True,
            )
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to its own user, which must own its files.
            uid = pwd.getpwnam(self.user).pw_uid
            for p in (self.data_dir, self.config_file, self.dynsec_file, *self.data_dir.glob("*.db")):
                os.chown(p, uid, -1)

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        """Start the broker as a daemon; a second start while running is a no-op."""
        if self.running():
            return
        self.init()
        ensure_free(self.port, "mosquitto (MQTT)")
        ensure_free(self.ws_port, "mosquitto (websockets)")
        with open(self.data_dir / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.config_file)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        if not wait_listening(self.port, 15) or proc.poll() is not None:
            self.stop()
            raise ServiceError(
                f"mosquitto failed to start on port {self.port}. Last log lines:\n"
                f"{tail(self.log_file)}\n{tail(self.data_dir / 'stderr.log')}"
            )

    def stop(self) -> None:
        """SIGTERM the broker (it saves its persistence file) and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        terminate(pid)
        self.pid_file.unlink(missing_ok=True)

    def listening(self) -> bool:
        return is_listening(self.port)
