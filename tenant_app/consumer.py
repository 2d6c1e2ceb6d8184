"""The MQTT ingestion consumer: `sensor/+/telemetry` -> `sensor_readings`, at least once, no duplicates.

- QoS 1, a fixed client id and a persistent session (MQTT 5 session expiry), so the broker keeps
  unacknowledged and queued messages while the consumer is down.
- Manual acknowledgement: a PUBACK is sent only after the batch holding the message is committed.
  A consumer killed mid-batch never acknowledged those messages; the broker redelivers them.
- Redelivered readings hit the (device_id, timestamp) unique key and are skipped, so nothing is
  stored twice.
- Batches: up to CONSUMER_BATCH_SIZE messages or CONSUMER_BATCH_MS of waiting, one INSERT ... SELECT
  FROM unnest(...) per batch. MQTT 5 Receive Maximum lets enough messages be in flight to fill them.
- Bad messages are dead-lettered in the same transaction and acknowledged; they never stop the
  consumer. A message that fails only when stored is isolated from its batch (the batch is split
  until it is alone), dead-lettered, and the rest stored (`services.ingest_messages`).
- Started before its database or broker, it waits and retries with one log line per attempt.
- While the license is expired or invalid, messages are held unacknowledged (the broker keeps them)
  and ingestion resumes when a renewed license appears.

Run it with `python -m tenant_app.consumer`.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from licensing.plans import MQTT_INGESTION
from tenant_app.config import TELEMETRY_SUBSCRIPTION, Settings
from tenant_app.db import describe, wait_for_database
from tenant_app.license_state import VALID, LicenseMonitor
from tenant_app.logs import start_service
from tenant_app.services import ingest_messages

log = logging.getLogger("tenant_app.consumer")


@dataclass(slots=True)
class Delivery:
    mid: int
    qos: int
    topic: str
    payload: bytes
    connection: int  # which broker connection delivered it (packet ids are per connection)


@dataclass
class ConsumerStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    db_errors: int = 0


class Consumer:
    """Consume telemetry until `stop()`; `run()` blocks, so tests run it in a thread."""

    def __init__(
        self,
        settings: Settings,
        license_monitor: LicenseMonitor | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.license = license_monitor or LicenseMonitor.from_settings(settings)
        self.clock = clock
        self.stats = ConsumerStats()
        self.connected = threading.Event()
        self._inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._connection = 0
        self._client = self._make_client()

    # --- MQTT --------------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.consumer_client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(s.mqtt_username, s.mqtt_password)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(s.startup_retry_max_seconds)))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        # Without a session expiry an MQTT 5 session ends at disconnect and queued messages are lost.
        props.SessionExpiryInterval = self.settings.consumer_session_expiry_seconds
        # How many unacknowledged messages the broker may send us: must exceed a batch.
        props.ReceiveMaximum = self.settings.consumer_receive_maximum
        return props

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            log.error("broker refused the consumer", extra={"reason": str(reason)})
            return
        self._connection += 1
        log.info("connected to broker", extra={"session_present": flags.session_present})
        client.subscribe(TELEMETRY_SUBSCRIPTION, qos=1)
        self.connected.set()

    def _on_connect_fail(self, client, userdata) -> None:
        # paho retries by itself (1 s doubling to 30 s); say so once per attempt, without a traceback.
        s = self.settings
        log.warning("broker unavailable; retrying", extra={"broker": f"{s.mqtt_host}:{s.mqtt_port}"})

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from broker; reconnecting", extra={"reason": str(reason)})

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        # Runs in paho's network thread: hand over and return, the writer does the work.
        self._inbox.put(Delivery(message.mid, message.qos, message.topic, message.payload, self._connection))

    # --- batches -----------------------------------------------------------------------------------
    def _next_batch(self, pending: list[Delivery]) -> list[Delivery]:
        """Fill `pending` up to the batch size, waiting at most the batch window after the first."""
        s = self.settings
        if not pending:
            try:
                pending.append(self._inbox.get(timeout=0.2))
            except queue.Empty:
                return pending
        deadline = time.monotonic() + s.consumer_batch_ms / 1000
        while len(pending) < s.consumer_batch_size:
            try:
                pending.append(self._inbox.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    pending.append(self._inbox.get(timeout=remaining))
                except queue.Empty:
                    break
        return pending

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.settings.database_url, autocommit=True)
        return self._conn

    def _store(self, batch: list[Delivery]) -> bool:
        """Commit the batch; False (nothing acknowledged, retried later) when it could not be."""
        try:
            result = ingest_messages(
                self._db(),
                [(d.topic, d.payload) for d in batch],
                self.clock(),
                dead_letter_max_rows=self.settings.dead_letter_max_rows,
            )
        except psycopg.Error as e:
            self.stats.db_errors += 1
            log.error(
                "batch not stored; will retry",
                extra={
                    "database": describe(self.settings.database_url),
                    "error": str(e).strip().splitlines()[0][:300] if str(e).strip() else e.__class__.__name__,
                    "messages": len(batch),
                },
            )
            if self._conn is not None and not self._conn.closed and self._conn.broken:
                self._conn.close()
            return False
        except Exception:  # a bug, not a message: keep the batch unacknowledged and stay up
            self.stats.db_errors += 1
            log.exception("batch not stored (unexpected error); will retry", extra={"messages": len(batch)})
            return False
        st = self.stats
        st.batches += 1
        st.stored += result.stored
        st.duplicates += result.duplicates
        st.dead_letters += len(result.rejected)
        for topic, reason in result.rejected[:5]:
            log.warning("message dead-lettered", extra={"topic": topic, "reason": reason})
        return True

    def _ack(self, batch: list[Delivery]) -> None:
        # In order of receipt, as MQTT requires. Messages delivered on an earlier connection are not
        # acknowledged: the broker resends them after a reconnect (they are then skipped as duplicates
        # and acknowledged), and their old packet ids may already name other messages.
        current = self._connection
        for d in batch:
            if d.qos > 0 and d.connection == current:
                self._client.ack(d.mid, d.qos)

    def _license_allows(self) -> bool:
        status = self.license.current()
        return status.state == VALID and status.license is not None and status.license.has(MQTT_INGESTION)

    # --- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Connect and consume until `stop()`; returns after acknowledging everything committed."""
        s = self.settings
        self._client.connect_async(
            s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False, properties=self._connect_properties()
        )
        self._client.loop_start()
        pending: list[Delivery] = []
        paused_logged = 0.0
        last_stats = time.monotonic()
        try:
            while not self._stop.is_set():
                if not self._license_allows():
                    # Hold everything unacknowledged: the broker keeps it until the license is renewed.
                    if time.monotonic() - paused_logged > 60:
                        paused_logged = time.monotonic()
                        log.error(
                            "ingestion paused: license does not allow MQTT ingestion",
                            extra={"license": self.license.current().summary(self.clock())},
                        )
                    self._stop.wait(1.0)
                    continue
                pending = self._next_batch(pending)
                if not pending:
                    continue
                self.stats.received += len(pending)
                if self._store(pending):
                    self._ack(pending)
                    pending = []
                else:
                    self.stats.received -= len(pending)
                    self._stop.wait(1.0)
                if time.monotonic() - last_stats > 10:
                    last_stats = time.monotonic()
                    log.info("consumer stats", extra={"stats": vars(self.stats)})
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            if self._conn is not None:
                self._conn.close()
            log.info("consumer stopped", extra={"stats": vars(self.stats)})

    def stop(self) -> None:
        self._stop.set()


def main() -> int:
    settings = start_service("consumer")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    if not wait_for_database(
        settings.database_url, max_delay=settings.startup_retry_max_seconds, stop=stopping
    ):
        return 0
    consumer = Consumer(settings)
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    signal.signal(signal.SIGINT, lambda *_: consumer.stop())
    log.info("consumer starting", extra={"client_id": settings.consumer_client_id})
    consumer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
