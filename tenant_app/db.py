"""The tenant database: schema (created idempotently by whichever service starts first) and pools."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

SCHEMA_LOCK = 0x10715710  # advisory lock id: services starting together create the schema once

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

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

TABLES = ("devices", "sensor_readings", "dead_letters", "alert_rules", "alert_events", "usage_counters")


def ensure_schema(conninfo: str) -> None:
    """Create the tables and indexes if missing; safe to run from several services at once."""
    with psycopg.connect(conninfo, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


def open_pool(conninfo: str, *, max_size: int = 8, name: str = "tenant") -> ConnectionPool:
    """A connection pool that opens lazily, so a service starts even while the database is down."""
    return ConnectionPool(conninfo, min_size=1, max_size=max_size, open=True, name=name, timeout=10)
