"""The tenant database: schema (created idempotently by whichever service starts first) and pools."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

SCHEMA_LOCK = 0x10715710  # advisory lock id: services starting together create the schema once
# A connect whose packets are dropped (a NetworkPolicy not yet applied to a new pod) would otherwise
# wait for the kernel's SYN retries, about two minutes, before the retry loop sees an error.
CONNECT_TIMEOUT_SECONDS = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- sha256 of the device's password (issued at registration): HTTP ingestion as that device.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS credential_hash bytea;

CREATE TABLE IF NOT EXISTS sensor_readings (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id       text NOT NULL,
    timestamp       timestamptz NOT NULL,
    temperature     double precision,
    humidity        double precision,
    pressure        double precision,
    gas_resistance  double precision
);
-- Serves range reads and latest-per-device; being UNIQUE it is also the message key that turns a
-- redelivered reading into a no-op (ON CONFLICT DO NOTHING).
CREATE UNIQUE INDEX IF NOT EXISTS sensor_readings_device_time ON sensor_readings (device_id, timestamp);
-- Retention deletes by time across all devices; BRIN is tiny and cheap for append-mostly rows.
CREATE INDEX IF NOT EXISTS sensor_readings_time_brin ON sensor_readings USING brin (timestamp);

CREATE TABLE IF NOT EXISTS dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    -- sha256 of topic and payload: a redelivered bad message is stored once.
    message_key  bytea NOT NULL UNIQUE
);
-- The size of the message as received (the stored payload is cut to a few KiB).
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS payload_bytes integer;

-- Instance API keys for scripts: only a hash is kept; the key is shown once, at creation.
CREATE TABLE IF NOT EXISTS api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL,
    secret_hash  bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE IF NOT EXISTS alert_rules (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL,
    device_id         text,
    metric            text NOT NULL,
    operator          text NOT NULL,
    threshold         double precision NOT NULL,
    cooldown_seconds  integer NOT NULL DEFAULT 300,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to alert_rules: history outlives a deleted rule, and ingestion never fails on it.
CREATE TABLE IF NOT EXISTS alert_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id       bigint NOT NULL,
    rule_name     text NOT NULL,
    device_id     text NOT NULL,
    metric        text NOT NULL,
    operator      text NOT NULL,
    threshold     double precision NOT NULL,
    value         double precision NOT NULL,
    reading_time  timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rule_id, device_id, reading_time)
);
CREATE INDEX IF NOT EXISTS alert_events_time ON alert_events (reading_time);

-- Monotonic usage counters for billing (rows can be deleted by retention, counts cannot go down).
CREATE TABLE IF NOT EXISTS usage_counters (
    name   text PRIMARY KEY,
    value  bigint NOT NULL DEFAULT 0
);
INSERT INTO usage_counters (name) VALUES ('readings_ingested'), ('dead_letters'), ('api_requests')
ON CONFLICT DO NOTHING;
"""

TABLES = (
    "devices",
    "sensor_readings",
    "dead_letters",
    "alert_rules",
    "alert_events",
    "usage_counters",
    "api_keys",
)


def ensure_schema(conninfo: str) -> None:
    """Create the tables and indexes if missing; safe to run from several services at once."""
    with connect(conninfo) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


def connect(conninfo: str, *, autocommit: bool = False) -> psycopg.Connection:
    """One connection whose connect step is bounded by CONNECT_TIMEOUT_SECONDS."""
    return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)


def open_pool(conninfo: str, *, max_size: int = 8, name: str = "tenant") -> ConnectionPool:
    """A connection pool that opens lazily, so a service starts even while the database is down."""
    return ConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        open=True,
        name=name,
        timeout=10,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


def describe(conninfo: str) -> str:
    """host:port/dbname of a connection string (never the password), for log lines."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "the configured database"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def wait_for_database(
    conninfo: str,
    *,
    max_delay: float = 30.0,
    first_delay: float = 0.5,
    stop: threading.Event | None = None,
) -> bool:
    """Block until the database answers, then create the schema; True once ready.

    While it is unreachable, each attempt logs one line (where, why, next try) and the wait
    doubles up to `max_delay`: a service started before its database waits instead of exiting
    with a traceback. Returns False if `stop` is set first. Errors other than "cannot connect"
    (a wrong password, a missing database) are logged the same way: they may be fixed while we wait.
    """
    delay, attempt = first_delay, 0
    while True:
        attempt += 1
        try:
            ensure_schema(conninfo)
            if attempt > 1:
                log.info("database reachable", extra={"database": describe(conninfo), "attempts": attempt})
            return True
        except psycopg.OperationalError as e:
            reason = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:300]
            log.warning(
                "database unavailable; retrying",
                extra={
                    "database": describe(conninfo),
                    "error": reason,
                    "attempt": attempt,
                    "retry_in_seconds": round(delay, 1),
                },
            )
        if stop is not None:
            if stop.wait(delay):
                return False
        else:
            time.sleep(delay)
        delay = min(max_delay, delay * 2)
