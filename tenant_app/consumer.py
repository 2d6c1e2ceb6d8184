"""The MQTT ingestion consumer: `sensor/+/telemetry` -> `sensor_readings`, at least once, no duplicates.

- QoS 1, a fixed client id and a persistent session (MQTT 5 session expiry), so the broker keeps
  unacknowledged and queued messages while the consumer is down.
- An MQTT 5 shared subscription (`$share/iotistic-ingest/sensor/+/telemetry`): the consumer
  processes of an instance (each its own client id and account) receive one share each.
- Manual acknowledgement: a PUBACK is sent only after the batch holding the message is committed.
  A consumer killed mid-batch never acknowledged those messages; the broker redelivers them.
- Redelivered readings hit the (device_id, timestamp) unique key and are skipped, so nothing is
  stored twice.
- Batches: up to CONSUMER_BATCH_SIZE messages or CONSUMER_BATCH_MS after the first one, one
  transaction each (`services.ingest_messages`); MQTT 5 Receive Maximum lets enough messages be
  in flight to fill them. The network side (tenant_app/mqtt_batching.py) reads with buffered
  I/O and writes a batch's PUBACKs at once, while the next batch is read during the commit.
- Bad messages are dead-lettered in the same transaction and acknowledged; they never stop the
  consumer. A message that fails only when stored is isolated from its batch (the batch is split
  until it is alone), dead-lettered, and the rest stored.
- Started before its database or broker, it waits and retries with one log line per attempt.
- While the license is expired or invalid, messages are held unacknowledged (the broker keeps them)
  and ingestion resumes when a renewed license appears.

Run it with `python -m tenant_app.consumer`; with CONSUMER_PROCESSES=N it runs N consumer processes
(tenant_app/supervisor.py), each on its own account and client id.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from licensing.plans import MQTT_INGESTION
from tenant_app.config import TELEMETRY_SHARED_SUBSCRIPTION, TELEMETRY_SUBSCRIPTION, Settings
from tenant_app.db import connect, describe, wait_for_database
from tenant_app.license_state import VALID, LicenseMonitor
from tenant_app.logs import start_service
from tenant_app.mqtt_batching import BatchingClient
from tenant_app.profiling import profiled, start_profile, stop_profile
from tenant_app.services import ingest_messages

log = logging.getLogger("tenant_app.consumer")


class Delivery(NamedTuple):
    mid: int
    qos: int
    topic: str
    payload: bytes
    connection: int  # which broker connection delivered it (packet ids are per connection)
    received_at: float  # time.monotonic() when it was decoded


@dataclass
class ConsumerStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    db_errors: int = 0


class Consumer:
    """Consume telemetry until `stop()`; `run()` blocks, so tests run it in a thread.

    Two threads: `mqtt-io` (BatchingClient.run_io: reads, decodes, acknowledges) appends
    deliveries to a deque; the caller of `run()` takes them in batches, stores each batch in one
    transaction and hands its packet ids back to be acknowledged in one write. While a batch is
    being committed, the next one is already being read.
    """

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
        self._deliveries: deque[Delivery] = deque()
        self._arrived = threading.Event()
        self._stop = threading.Event()
        self._io_stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._subscribe_mid: int | None = None
        self._client = self._make_client()

    @property
    def connection_number(self) -> int:
        """How many connections to the broker this consumer has made (1 while the first one lasts)."""
        return self._client.connection_number

    # --- MQTT --------------------------------------------------------------------------------------
    def _make_client(self) -> BatchingClient:
        s = self.settings
        client = BatchingClient(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.consumer_client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(s.mqtt_username, s.mqtt_password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.sink = self._on_publish
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
        log.info("connected to broker", extra={"session_present": flags.session_present})
        _, self._subscribe_mid = client.subscribe(TELEMETRY_SHARED_SUBSCRIPTION, qos=1)
        if flags.session_present:
            # A session made before consumers shared the subscription would get every reading twice.
            client.unsubscribe(TELEMETRY_SUBSCRIPTION)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error(
                "broker refused the telemetry subscription",
                extra={"subscription": TELEMETRY_SHARED_SUBSCRIPTION, "reason": refused[0]},
            )
        elif mid == self._subscribe_mid:
            log.info("subscribed", extra={"subscription": TELEMETRY_SHARED_SUBSCRIPTION})

    def _on_connect_fail(self, error: Exception) -> None:
        # Retried with a doubling delay (1 s up to STARTUP_RETRY_MAX_SECONDS): one line per attempt.
        s = self.settings
        log.warning(
            "broker unavailable; retrying",
            extra={"broker": f"{s.mqtt_host}:{s.mqtt_port}", "error": str(error) or error.__class__.__name__},
        )

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from broker; reconnecting", extra={"reason": str(reason)})

    def _on_publish(self, mid: int, qos: int, topic: str, payload: bytes, connection: int) -> None:
        # Runs in the I/O thread for every message: append and return, the batch loop does the work.
        self._deliveries.append(Delivery(mid, qos, topic, payload, connection, time.monotonic()))
        if not self._arrived.is_set():
            self._arrived.set()

    # --- batches -----------------------------------------------------------------------------------
    def _next_batch(self, pending: list[Delivery]) -> list[Delivery]:
        """Fill `pending` up to the batch size, waiting at most the batch window after its first message."""
        s = self.settings
        inbox = self._deliveries
        if not pending and not inbox:
            self._arrived.wait(0.2)
        self._arrived.clear()
        if not pending and not inbox:
            return pending
        first = pending[0] if pending else inbox[0]
        deadline = first.received_at + s.consumer_batch_ms / 1000
        while len(pending) + len(inbox) < s.consumer_batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.wait(remaining)
            self._arrived.clear()
        take = min(len(inbox), s.consumer_batch_size - len(pending))
        pending.extend(inbox.popleft() for _ in range(take))
        return pending

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings.database_url, autocommit=True)
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
        # In order of receipt, in one write. Messages delivered on an earlier connection are not
        # acknowledged (BatchingClient drops them): the broker resends them after a reconnect (they
        # are then skipped as duplicates and acknowledged), and their old packet ids may already
        # name other messages.
        connection = batch[0].connection
        mids: list[int] = []
        for d in batch:
            if d.connection != connection:
                self._client.ack_many(connection, mids)
                connection, mids = d.connection, []
            if d.qos > 0:
                mids.append(d.mid)
        self._client.ack_many(connection, mids)

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
        io = threading.Thread(
            target=profiled(self._client.run_io, s.consumer_profile_dir, "io"),
            args=(self._io_stop,),
            kwargs={
                "on_connect_fail": self._on_connect_fail,
                "max_delay": max(1.0, s.startup_retry_max_seconds),
            },
            name="mqtt-io",
            daemon=True,
        )
        io.start()
        profiler = start_profile(s.consumer_profile_dir)
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
            self._io_stop.set()
            self._client.wake()
            io.join(10)
            if self._conn is not None:
                self._conn.close()
            stop_profile(profiler, s.consumer_profile_dir, "batches")
            log.info("consumer stopped", extra={"stats": vars(self.stats)})

    def stop(self) -> None:
        self._stop.set()
        self._arrived.set()


def end_session(settings: Settings, timeout: float = 5.0) -> bool:
    """Delete a consumer's persistent session on the broker; True if the broker accepted the login.

    For a consumer retired for good (a test's, a benchmark's): a session left behind stays a member
    of the shared subscription and keeps receiving its share of the readings until it expires.
    Whatever is still queued for that session is dropped with it.
    """
    accepted = threading.Event()
    answered = threading.Event()

    def on_connect(client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            accepted.set()
        answered.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=settings.consumer_client_id, protocol=mqtt.MQTTv5
    )
    client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    client.on_connect = on_connect
    # clean_start discards the old session; without a session expiry the new one ends at disconnect.
    client.connect(settings.mqtt_host, settings.mqtt_port, clean_start=True)
    client.loop_start()
    try:
        answered.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return accepted.is_set()


def main() -> int:
    settings = start_service("consumer")
    if settings.consumer_processes > 1:
        from tenant_app.supervisor import supervise

        return supervise(settings)
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
