"""The ingestion use case shared by `POST /api/sensor-data` and the MQTT consumer.

One call = one transaction: readings, their alert events, dead letters and the usage counters are
committed together or not at all, so a crash never leaves half a batch behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from tenant_app import alerts, store
from tenant_app.config import TELEMETRY_TOPIC
from tenant_app.readings import InvalidReading, Reading, validate_reading

_TOPIC_PREFIX, _TOPIC_SUFFIX = TELEMETRY_TOPIC.split("{device_id}")


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    alerts: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (topic, reason), for logs


def device_from_topic(topic: str) -> str | None:
    """`sensor/<device>/telemetry` -> `<device>`; None for any other topic."""
    if topic.startswith(_TOPIC_PREFIX) and topic.endswith(_TOPIC_SUFFIX):
        device = topic[len(_TOPIC_PREFIX) : len(topic) - len(_TOPIC_SUFFIX)]
        if device and "/" not in device:
            return device
    return None


def parse_message(topic: str, payload: bytes, now: datetime) -> Reading:
    """Validate one MQTT telemetry message; InvalidReading says why it is dead-lettered."""
    device = device_from_topic(topic)
    if device is None:
        raise InvalidReading(f"topic {topic!r} is not a telemetry topic")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidReading(f"payload is not JSON: {e}") from None
    return validate_reading(data, device_id=device, now=now, require_timestamp=True)


def _message_key(topic: str, payload: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()


def store_readings(conn: psycopg.Connection, readings: Sequence[Reading]) -> IngestResult:
    """Insert validated readings of known devices, evaluate alerts and count usage (caller commits)."""
    result = IngestResult()
    rules = store.load_rules(conn)
    if rules:
        stored, new_rows = store.insert_readings(conn, readings, returning=True)
        events = alerts.evaluate(rules, new_rows, store.last_fired(conn, [r.id for r in rules]))
        result.alerts = store.insert_alert_events(conn, events)
    else:
        stored = store.insert_readings(conn, readings)
    result.stored = stored
    result.duplicates = len(readings) - stored
    store.add_usage(conn, "readings_ingested", stored)
    return result


def ingest_messages(
    conn: psycopg.Connection, messages: Sequence[tuple[str, bytes]], now: datetime
) -> IngestResult:
    """Validate and store a batch of MQTT messages in one transaction.

    Malformed, out-of-range and unknown-device messages go to `dead_letters` in the same
    transaction; they never fail the batch.
    """
    parsed: list[tuple[str, bytes, Reading]] = []
    rejects: list[tuple[str, bytes, str]] = []
    for topic, payload in messages:
        try:
            parsed.append((topic, payload, parse_message(topic, payload, now)))
        except InvalidReading as e:
            rejects.append((topic, payload, str(e)))
    with conn.transaction():
        known = store.known_devices(conn, (r.device_id for _, _, r in parsed))
        accepted = []
        for topic, payload, r in parsed:
            if r.device_id in known:
                accepted.append(r)
            else:
                rejects.append((topic, payload, f"unknown device {r.device_id!r} (not registered)"))
        result = store_readings(conn, accepted)
        dead = [(t, p, reason, _message_key(t, p)) for t, p, reason in rejects]
        result.dead_letters = store.insert_dead_letters(conn, dead)
        store.add_usage(conn, "dead_letters", result.dead_letters)
    result.rejected = [(t, reason) for t, _, reason in rejects]
    return result
