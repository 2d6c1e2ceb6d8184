"""A BME688-like device simulator for demos: publishes readings over MQTT every N seconds.

    # register 3 devices through the API (with an API key) and publish every 10 s until Ctrl-C
    API_URL=http://127.0.0.1:3001 IOTISTIC_API_KEY=iotk_... python -m tenant_app.simulator --register 3
    # the same, over MQTT over websockets (the address the API gave at registration: wss://.../mqtt)
    python -m tenant_app.simulator --register 3 --websockets
    # or publish as an existing device with its credentials
    python -m tenant_app.simulator --device greenhouse-1 --password ... --interval 2 --count 30
    python -m tenant_app.simulator --device greenhouse-1 --password ... --url wss://acme.iotistic.cloud/mqtt

Readings drift like a real room (random walk within the sensor's ranges). Each message carries the
device's timestamp, which is the reading's idempotency key.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from tenant_app.config import TELEMETRY_TOPIC, ConfigError, Settings


@dataclass
class Bme688:
    """A drifting indoor climate: temperature °C, humidity %, pressure hPa, gas resistance Ω."""

    rng: random.Random = field(default_factory=random.Random)
    temperature: float = 21.5
    humidity: float = 45.0
    pressure: float = 1013.0
    gas_resistance: float = 120_000.0

    def _walk(self, value: float, step: float, low: float, high: float) -> float:
        return min(high, max(low, value + self.rng.uniform(-step, step)))

    def read(self, timestamp: float) -> dict:
        self.temperature = self._walk(self.temperature, 0.2, 15.0, 32.0)
        self.humidity = self._walk(self.humidity, 0.8, 20.0, 80.0)
        self.pressure = self._walk(self.pressure, 0.3, 980.0, 1040.0)
        self.gas_resistance = self._walk(self.gas_resistance, 2500.0, 20_000.0, 400_000.0)
        return {
            "ts": round(timestamp, 6),
            "temperature": round(self.temperature, 2),
            "humidity": round(self.humidity, 2),
            "pressure": round(self.pressure, 2),
            "gas_resistance": round(self.gas_resistance),
        }


@dataclass(frozen=True)
class BrokerUrl:
    """Where to publish: mqtt://host:port, mqtts://..., ws://host:port/path or wss://host/path."""

    transport: str  # "tcp" or "websockets"
    host: str
    port: int
    path: str = "/mqtt"
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        parts = urllib.parse.urlsplit(url)
        defaults = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
        if parts.scheme not in defaults or not parts.hostname:
            raise ValueError(
                f"broker URL {url!r} must be mqtt://, mqtts://, ws:// or wss://host[:port][/path]"
            )
        return cls(
            "websockets" if parts.scheme in ("ws", "wss") else "tcp",
            parts.hostname,
            parts.port or defaults[parts.scheme],
            parts.path or "/mqtt",
            parts.scheme in ("mqtts", "wss"),
        )


def publish_readings(
    broker: BrokerUrl | str,
    device_id: str,
    password: str,
    *,
    count: int,
    interval: float,
    stop: threading.Event | None = None,
    seed: int | None = None,
) -> int:
    """Publish `count` readings (0 = until `stop`) at QoS 1; returns how many the broker accepted.

    The client id is the device id: the broker accepts a device under no other.
    """
    stop = stop or threading.Event()
    b = BrokerUrl.parse(broker) if isinstance(broker, str) else broker
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5, transport=b.transport
    )
    if b.transport == "websockets":
        client.ws_set_options(path=b.path)
    if b.tls:
        client.tls_set()
    client.username_pw_set(device_id, password)
    client.connect(b.host, b.port, keepalive=30)
    client.loop_start()
    sensor = Bme688(random.Random(seed))
    topic = TELEMETRY_TOPIC.format(device_id=device_id)
    sent = 0
    try:
        while not stop.is_set() and (count == 0 or sent < count):
            info = client.publish(topic, json.dumps(sensor.read(time.time())), qos=1)
            info.wait_for_publish(timeout=10)
            if info.is_published():
                sent += 1
            if count == 0 or sent < count:
                stop.wait(interval)
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def register_device(api_url: str, device_id: str, api_key: str, wait_seconds: float = 30.0) -> dict:
    """Register a device through the API; returns its MQTT credentials.

    Waits up to `wait_seconds` for the API to accept connections (it may still be starting).
    """
    req = urllib.request.Request(
        api_url.rstrip("/") + "/api/devices",
        data=json.dumps({"id": device_id, "name": "simulated BME688"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        method="POST",
    )
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.load(resp)["mqtt"]
        except urllib.error.HTTPError as e:
            raise SystemExit(
                f"registering {device_id} failed: {e.code} {e.read().decode(errors='replace')}"
            ) from None
        except urllib.error.URLError as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"the API at {api_url} is unreachable: {e.reason}") from None
            print(f"waiting for the API at {api_url} ({e.reason})", file=sys.stderr)
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tenant_app.simulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--register",
        type=int,
        metavar="N",
        help="register N devices sim-1..sim-N via API_URL (IOTISTIC_API_KEY)",
    )
    parser.add_argument("--device", help="publish as this existing device")
    parser.add_argument("--password", help="the device's MQTT password")
    parser.add_argument(
        "--url", help="broker URL: mqtt://host:port or wss://host/mqtt (default MQTT_PUBLIC_HOST)"
    )
    parser.add_argument(
        "--websockets", action="store_true", help="with --register: use the websocket URL the API gives"
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between readings (default 10)")
    parser.add_argument("--count", type=int, default=0, help="readings per device (default 0: until Ctrl-C)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env({"CUSTOMER_ID": "simulator", **os.environ}, require_database=False)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    devices: list[tuple[str, str, str]] = []
    if args.register:
        if not settings.api_key:
            parser.error("--register needs IOTISTIC_API_KEY (python -m tenant_app.keys create --role admin)")
        for i in range(1, args.register + 1):
            creds = register_device(settings.api_url, f"sim-{i}", settings.api_key)
            url = args.url or (
                creds["websocket_url"]
                if args.websockets and creds.get("websocket_url")
                else f"mqtt://{creds['host']}:{creds['port']}"
            )
            devices.append((creds["username"], creds["password"], url))
    elif args.device and args.password:
        url = args.url or f"mqtt://{settings.mqtt_public_host}:{settings.mqtt_public_port}"
        devices.append((args.device, args.password, url))
    else:
        parser.error("give --register N, or --device and --password")
    try:
        brokers = {url: BrokerUrl.parse(url) for _, _, url in devices}
    except ValueError as e:
        parser.error(str(e))
    stop = threading.Event()
    sent: dict[str, int] = {}

    def run(device: str, password: str, url: str) -> None:
        try:
            sent[device] = publish_readings(
                brokers[url], device, password, count=args.count, interval=args.interval, stop=stop
            )
        except (OSError, ValueError) as e:
            print(f"{device}: cannot publish to {url}: {e}", file=sys.stderr)

    threads = [threading.Thread(target=run, args=d, daemon=True) for d in devices]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        stop.set()
    for device, _, url in devices:
        print(f"{device}: {sent.get(device, 0)} readings published to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
