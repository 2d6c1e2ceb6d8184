"""Started before their database or broker, the services wait with a clear log line, then work.

The database and broker "appear" when a TCP forwarder starts on the port the services were told,
exactly as a Postgres or Mosquitto pod becoming ready would.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from devenv.ports import free_port
from tests.tenant_app.helpers import http, wait_for
from tests.tenant_app.test_consumer_crash import consumer_env

ROOT = Path(__file__).resolve().parents[2]


class Forwarder:
    """Accept on 127.0.0.1:`port` and relay every connection to 127.0.0.1:`target`."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()


def log_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"msg": line})
    return out


def start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def test_api_and_consumer_wait_for_the_database_and_the_broker_with_clear_log_lines(
    settings, postgres, mosquitto, tmp_path
):
    db_port, mqtt_port, api_port = free_port(), free_port(), free_port()
    env = consumer_env(settings)
    env |= {
        "DATABASE_URL": settings.database_url.replace(f":{postgres.port}/", f":{db_port}/"),
        "MQTT_PORT": str(mqtt_port),
        "API_PORT": str(api_port),
        "STARTUP_RETRY_MAX_SECONDS": "1",
    }
    api_log, consumer_log = tmp_path / "api.log", tmp_path / "consumer.log"
    api = start("tenant_app.api", env, api_log)
    consumer = start("tenant_app.consumer", env, consumer_log)
    forwarders: list[Forwarder] = []
    try:
        for log in (api_log, consumer_log):
            wait_for(
                lambda log=log: (
                    sum(e["msg"] == "database unavailable; retrying" for e in log_lines(log)) >= 2
                ),
                what=f"two 'database unavailable' lines in {log.name}",
            )
        assert api.poll() is None and consumer.poll() is None, "a service exited instead of waiting"
        line = next(e for e in log_lines(api_log) if e["msg"] == "database unavailable; retrying")
        assert line["database"] == f"127.0.0.1:{db_port}/tenant_app_test" and "refused" in line["error"]
        assert settings.database_url.split(":")[2].split("@")[0] not in api_log.read_text()  # no password

        forwarders.append(Forwarder(db_port, postgres.port))  # the database comes up
        wait_for(
            lambda: (
                http("GET", f"http://127.0.0.1:{api_port}/health").status == 200
                if _listening(api_port)
                else False
            ),
            timeout=30,
            what="the API to serve /health",
        )
        wait_for(
            lambda: any(e["msg"] == "broker unavailable; retrying" for e in log_lines(consumer_log)),
            what="the consumer to say the broker is unavailable",
        )
        forwarders.append(Forwarder(mqtt_port, mosquitto.port))  # the broker comes up
        wait_for(
            lambda: any(e["msg"] == "connected to broker" for e in log_lines(consumer_log)),
            timeout=45,
            what="the consumer to connect once the broker is up",
        )
        for log in (api_log, consumer_log):
            assert "Traceback" not in log.read_text(), log.read_text()[-2000:]
    finally:
        codes = stop(api), stop(consumer)
        for f in forwarders:
            f.stop()
    assert codes == (0, 0)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_consumer_stopped_while_waiting_for_its_database_exits_cleanly(settings, tmp_path):
    env = consumer_env(settings) | {"DATABASE_URL": "postgresql://x:y@127.0.0.1:9/nowhere"}
    log = tmp_path / "consumer.log"
    proc = start("tenant_app.consumer", env, log)
    wait_for(lambda: "database unavailable" in log.read_text(), what="the first retry line")
    assert stop(proc) == 0
    assert "Traceback" not in log.read_text()
    assert os.path.getsize(log) > 0
