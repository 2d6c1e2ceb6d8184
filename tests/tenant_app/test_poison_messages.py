"""Poison MQTT messages: each one is dead-lettered and acknowledged, every good one around it stored.

Also: a message that passes validation but fails when stored is isolated from its batch, and dead
letters are capped in size and in count.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg
import pytest

from tenant_app import services
from tests.tenant_app.helpers import wait_for
from tests.tenant_app.test_ingestion import Device, count_rows, register


def poison(ts: float) -> dict[str, bytes]:
    """Every kind of payload that cannot be stored, each with a fresh timestamp."""
    return {
        "not JSON": b"{not json",
        "empty": b"",
        "not UTF-8": b'{"ts": 1, "temperature": "\xff\xfe"}',
        "NaN": b'{"ts": %d, "temperature": NaN}' % ts,
        "Infinity": b'{"ts": %d, "temperature": Infinity}' % ts,
        "overflowing float": b'{"ts": %d, "temperature": 1e999}' % ts,
        "400-digit integer": b'{"ts": %d, "temperature": %s}' % (ts, b"9" * 400),
        "5000-digit integer": b'{"ts": %d, "temperature": %s}' % (ts, b"9" * 5000),
        "huge integer timestamp": b'{"ts": %s, "temperature": 20}' % (b"9" * 400),
        "deeply nested": b"[" * 5000 + b"]" * 5000,
        "before 2000": b'{"ts": "1999-12-31T23:59:59Z", "temperature": 20}',
        "epoch 0": b'{"ts": 0, "temperature": 20}',
        "far future": b'{"ts": "9999-01-01T00:00:00", "temperature": 20}',
        "an hour ahead": b'{"ts": %d, "temperature": 20}' % (ts + 3600),
        "offset past the range": b'{"ts": "0001-01-01T00:00:00+14:00", "temperature": 20}',
        "no timestamp": b'{"temperature": 20}',
        "a list": b"[1, 2, 3]",
        "a string": b'"hello"',
        "a number": b"42",
        "null": b"null",
        "string value": b'{"ts": %d, "temperature": "hot"}' % ts,
        "boolean value": b'{"ts": %d, "temperature": true}' % ts,
        "out of range": b'{"ts": %d, "temperature": 999}' % ts,
        "no metric": b'{"ts": %d}' % ts,
        "NUL in the timestamp": b'{"ts": "2026-01-01T00:00:00\\u0000", "temperature": 20}',
        "lone surrogate timestamp": b'{"ts": "\\ud800", "temperature": 20}',
        "object timestamp": b'{"ts": {"$date": 1}, "temperature": 20}',
    }


def test_each_poison_message_in_a_stream_of_good_ones_is_dead_lettered_and_nothing_else_lost(
    api, start_consumer, settings
):
    consumer = start_consumer()
    creds = register(api)
    device, topic = creds["username"], creds["topic"]
    dev = Device(creds)
    base = time.time() - 600
    cases = poison(time.time())
    good = 0
    try:
        for i, (name, payload) in enumerate(cases.items()):
            for j in range(3):  # good, good, good around every poison message
                reading = {"ts": base + i * 4 + j, "temperature": 20 + j, "humidity": 40}
                assert not dev.publish(topic, reading).is_failure
                good += 1
            ack = dev.publish(topic, payload)
            assert not ack.is_failure, f"{name}: the broker refused it ({ack})"
        for j in range(3):
            dev.publish(topic, {"ts": base + 500 + j, "temperature": 25})
            good += 1
    finally:
        dev.close()
    wait_for(
        lambda: count_rows(settings.database_url, device) == good, timeout=30, what=f"{good} good readings"
    )
    dead = wait_for(
        lambda: (
            len(d := api.call("GET", "/api/dead-letters?limit=1000").body["dead_letters"]) == len(cases) and d
        ),
        timeout=30,
        what=f"{len(cases)} dead letters",
    )
    assert all(d["reason"] and d["topic"] == topic for d in dead)
    assert consumer.connected.is_set() and consumer.stats.db_errors == 0
    assert consumer.stats.dead_letters == len(cases)
    # Everything was acknowledged: a restarted consumer gets nothing redelivered.
    assert consumer.stats.stored == good and consumer.stats.duplicates == 0


@pytest.fixture
def poisoned_temperature(settings):
    """A database that refuses one particular row (13.37 °C), like a constraint added by an operator."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION refuse_1337() RETURNS trigger AS $$ BEGIN "
            "IF NEW.temperature = 13.37 THEN RAISE EXCEPTION 'refused row' USING ERRCODE = '22023'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.execute(
            "CREATE TRIGGER refuse_1337 BEFORE INSERT ON sensor_readings "
            "FOR EACH ROW EXECUTE FUNCTION refuse_1337()"
        )
    yield 13.37
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER IF EXISTS refuse_1337 ON sensor_readings")
        conn.execute("DROP FUNCTION IF EXISTS refuse_1337()")


def test_a_row_that_fails_only_when_stored_is_isolated_and_the_rest_of_its_batch_stored(
    api, settings, poisoned_temperature
):
    device = register(api)["username"]
    topic = f"sensor/{device}/telemetry"
    t0 = time.time() - 600
    messages = [
        (topic, json.dumps({"ts": t0 + i, "temperature": poisoned_temperature if i == 57 else 20.0}).encode())
        for i in range(200)
    ]
    messages.append((topic, b"not json"))
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        result = services.ingest_messages(conn, messages, datetime.now(UTC))
    assert (result.stored, result.dead_letters) == (199, 2)
    reasons = sorted(reason for _, reason in result.rejected)
    assert reasons[0].startswith("could not be stored: ") and "refused row" in reasons[0]
    assert count_rows(settings.database_url, device) == 199


def test_the_consumer_survives_a_row_the_database_refuses(
    api, start_consumer, settings, poisoned_temperature
):
    consumer = start_consumer()
    creds = register(api)
    dev = Device(creds)
    t0 = time.time() - 60
    try:
        for i in range(30):
            temp = poisoned_temperature if i == 10 else 21.0
            dev.publish(creds["topic"], {"ts": t0 + i, "temperature": temp})
    finally:
        dev.close()
    wait_for(
        lambda: count_rows(settings.database_url, creds["username"]) == 29, what="the 29 storable readings"
    )
    wait_for(lambda: consumer.stats.dead_letters == 1, what="the refused row dead-lettered")
    assert consumer.connected.is_set() and consumer.stats.db_errors == 0


def test_dead_letters_are_capped_in_size_and_count(api, settings):
    device = register(api)["username"]
    topic = f"sensor/{device}/telemetry"
    big = b"x" * 15000  # under the broker's 16 KiB cap, but not JSON
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        services.ingest_messages(conn, [(topic, big)], datetime.now(UTC), dead_letter_max_rows=5)
        for i in range(8):
            services.ingest_messages(
                conn, [(topic, b"junk %d" % i)], datetime.now(UTC), dead_letter_max_rows=5
            )
        rows = conn.execute("SELECT payload, payload_bytes FROM dead_letters ORDER BY id").fetchall()
        counted = conn.execute("SELECT value FROM usage_counters WHERE name = 'dead_letters'").fetchone()[0]
    assert [bytes(p) for p, _ in rows] == [b"junk %d" % i for i in range(3, 8)]  # the newest 5
    assert counted == 9  # the usage counter still counts every one
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        services.ingest_messages(conn, [(topic, big + b"!")], datetime.now(UTC))
        payload, size = conn.execute(
            "SELECT payload, payload_bytes FROM dead_letters ORDER BY id DESC"
        ).fetchone()
    assert len(bytes(payload)) == services.DEAD_LETTER_MAX_PAYLOAD and size == 15001
