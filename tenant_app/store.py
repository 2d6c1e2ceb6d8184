"""SQL for the tenant database, one function per query; callers own the transactions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from weakref import WeakSet

import psycopg
from psycopg.rows import dict_row

from tenant_app.alerts import AlertEvent, AlertRule
from tenant_app.readings import METRICS, Reading

READING_COLUMNS = ("device_id", "timestamp", *METRICS)


# --- devices --------------------------------------------------------------------------------------
def lock_devices(conn: psycopg.Connection) -> None:
    """Serialise registrations within the transaction, so two requests cannot both take the last slot."""
    conn.execute("LOCK TABLE devices IN SHARE ROW EXCLUSIVE MODE")


def count_devices(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM devices").fetchone()[0]


def insert_device(
    conn: psycopg.Connection, device_id: str, name: str, credential_hash: bytes | None = None
) -> dict | None:
    """The new device row, or None when the id is taken."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "INSERT INTO devices (id, name, credential_hash) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING RETURNING id, name, created_at",
            (device_id, name, credential_hash),
        ).fetchone()


def device_credential(conn: psycopg.Connection, device_id: str) -> bytes | None:
    """The stored hash of a device's password (None: no such device, or registered without one)."""
    row = conn.execute("SELECT credential_hash FROM devices WHERE id = %s", (device_id,)).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


def device_ids(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id")]


def list_devices(conn: psycopg.Connection) -> list[dict]:
    """Devices with the time of their latest reading (None before the first one)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT d.id, d.name, d.created_at, r.timestamp AS last_seen FROM devices d "
            "LEFT JOIN LATERAL (SELECT timestamp FROM sensor_readings s WHERE s.device_id = d.id "
            "ORDER BY timestamp DESC LIMIT 1) r ON true ORDER BY d.id"
        ).fetchall()


def get_device(conn: psycopg.Connection, device_id: str) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT id, name, created_at FROM devices WHERE id = %s", (device_id,)).fetchone()


def delete_device(conn: psycopg.Connection, device_id: str) -> bool:
    """Delete a device and its readings; False when it did not exist."""
    if conn.execute("DELETE FROM devices WHERE id = %s", (device_id,)).rowcount == 0:
        return False
    conn.execute("DELETE FROM sensor_readings WHERE device_id = %s", (device_id,))
    return True


def known_devices(conn: psycopg.Connection, device_ids: Iterable[str]) -> set[str]:
    ids = list(set(device_ids))
    if not ids:
        return set()
    return {r[0] for r in conn.execute("SELECT id FROM devices WHERE id = ANY(%s)", (ids,))}


# --- readings -------------------------------------------------------------------------------------
_INSERT_READINGS = (
    "INSERT INTO sensor_readings (device_id, timestamp, temperature, humidity, pressure, gas_resistance) "
    "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::float8[], %s::float8[], "
    "%s::float8[]) ON CONFLICT (device_id, timestamp) DO NOTHING"
)


def insert_readings(conn: psycopg.Connection, readings: Sequence[Reading], returning: bool = False):
    """Insert many readings in one statement; duplicates (same device and timestamp) are skipped.

    Returns the number inserted, and with `returning` also the inserted readings (for alerts).
    """
    if not readings:
        return (0, []) if returning else 0
    columns = [[getattr(r, c) for r in readings] for c in READING_COLUMNS]
    if not returning:
        return conn.execute(_INSERT_READINGS, columns).rowcount
    cur = conn.execute(_INSERT_READINGS + " RETURNING " + ", ".join(READING_COLUMNS), columns)
    rows = [Reading(*row) for row in cur.fetchall()]
    return len(rows), rows


# MQTT batches: COPY (binary) into a staging table of the session, then one statement that keeps
# the rows of registered devices, skips duplicates, counts usage and says which devices are unknown.
_CREATE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS reading_stage (device_id text NOT NULL, timestamp timestamptz NOT NULL, "
    "temperature float8, humidity float8, pressure float8, gas_resistance float8) ON COMMIT DELETE ROWS"
)
_COPY_STAGE = f"COPY reading_stage ({', '.join(READING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_STAGE_TYPES = ("text", "timestamptz", "float8", "float8", "float8", "float8")
_INSERT_STAGED = """
WITH staged AS (
    SELECT s.*, d.id IS NOT NULL AS known FROM reading_stage s LEFT JOIN devices d ON d.id = s.device_id
), inserted AS (
    INSERT INTO sensor_readings (device_id, timestamp, temperature, humidity, pressure, gas_resistance)
    SELECT device_id, timestamp, temperature, humidity, pressure, gas_resistance FROM staged WHERE known
    ON CONFLICT (device_id, timestamp) DO NOTHING
    RETURNING device_id, timestamp, temperature, humidity, pressure, gas_resistance
), counted AS (
    UPDATE usage_counters SET value = value + (SELECT count(*) FROM inserted)
    WHERE name = 'readings_ingested' AND EXISTS (SELECT 1 FROM inserted)
)
SELECT 'stored', NULL::text, NULL::timestamptz, count(*)::float8, NULL::float8, NULL::float8, NULL::float8
FROM inserted
UNION ALL
SELECT DISTINCT 'unknown', device_id, NULL::timestamptz, NULL::float8, NULL::float8, NULL::float8,
    NULL::float8
FROM staged WHERE NOT known
UNION ALL
SELECT 'row', * FROM inserted WHERE EXISTS (SELECT 1 FROM alert_rules)
"""
_staged_connections: WeakSet[psycopg.Connection] = WeakSet()


def ensure_stage(conn: psycopg.Connection) -> None:
    """Create the session's staging table, once per connection when called outside a transaction.

    Inside one (where a rollback would drop it again) it is created every time.
    """
    if conn in _staged_connections:
        return
    idle = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    conn.execute(_CREATE_STAGE)
    if idle:
        _staged_connections.add(conn)


def insert_readings_staged(
    conn: psycopg.Connection, readings: Sequence[Reading]
) -> tuple[int, set[str], list[Reading]]:
    """Store readings of registered devices (duplicates skipped) and count them as ingested.

    For the MQTT consumer's batches: one binary COPY and one statement, in the caller's
    transaction. Returns (rows inserted, device ids that are not registered, and the inserted
    readings when alert rules exist, else []). The staging table is per session and emptied at
    commit (`ensure_stage`).
    """
    ensure_stage(conn)
    with conn.cursor() as cur:
        with cur.copy(_COPY_STAGE) as copy:
            copy.set_types(_STAGE_TYPES)
            for r in readings:  # a Reading is a tuple in READING_COLUMNS order
                copy.write_row(r)
        stored, unknown, rows = 0, set(), []
        for kind, device, *values in cur.execute(_INSERT_STAGED):
            if kind == "stored":
                stored = int(values[1])
            elif kind == "unknown":
                unknown.add(device)
            else:
                rows.append(Reading(device, *values))
    return stored, unknown, rows


def count_readings(conn: psycopg.Connection, device_id: str, start: datetime, end: datetime, cap: int) -> int:
    """Rows in the range, counted up to `cap` only (cheap even for months of data)."""
    return conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM sensor_readings WHERE device_id = %s "
        "AND timestamp >= %s AND timestamp < %s LIMIT %s) s",
        (device_id, start, end, cap),
    ).fetchone()[0]


def readings_raw(
    conn: psycopg.Connection, device_id: str, start: datetime, end: datetime, limit: int
) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT timestamp, temperature, humidity, pressure, gas_resistance FROM sensor_readings "
            "WHERE device_id = %s AND timestamp >= %s AND timestamp < %s ORDER BY timestamp LIMIT %s",
            (device_id, start, end, limit),
        ).fetchall()


def readings_bucketed(
    conn: psycopg.Connection, device_id: str, start: datetime, end: datetime, bucket_seconds: int
) -> list[dict]:
    """Per-bucket averages (and row counts), buckets aligned on `start`."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT date_bin(make_interval(secs => %s), timestamp, %s) AS timestamp, "
            "avg(temperature) AS temperature, avg(humidity) AS humidity, avg(pressure) AS pressure, "
            "avg(gas_resistance) AS gas_resistance, count(*) AS count FROM sensor_readings "
            "WHERE device_id = %s AND timestamp >= %s AND timestamp < %s GROUP BY 1 ORDER BY 1",
            (bucket_seconds, start, device_id, start, end),
        ).fetchall()


def iter_readings(conn: psycopg.Connection, device_id: str, start: datetime, end: datetime):
    """All readings of a device in a range, streamed from a server-side cursor (CSV export)."""
    with conn.cursor(name="export") as cur:
        cur.execute(
            "SELECT timestamp, temperature, humidity, pressure, gas_resistance FROM sensor_readings "
            "WHERE device_id = %s AND timestamp >= %s AND timestamp < %s ORDER BY timestamp",
            (device_id, start, end),
        )
        yield from cur


def latest_per_device(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT d.id AS device_id, r.timestamp, r.temperature, r.humidity, r.pressure, r.gas_resistance "
            "FROM devices d JOIN LATERAL (SELECT * FROM sensor_readings s WHERE s.device_id = d.id "
            "ORDER BY timestamp DESC LIMIT 1) r ON true ORDER BY d.id"
        ).fetchall()


# --- retention ------------------------------------------------------------------------------------
_PURGED = {
    "sensor_readings": "timestamp",
    "dead_letters": "received_at",
    "alert_events": "reading_time",
}


def delete_older_than(conn: psycopg.Connection, table: str, cutoff: datetime, chunk: int) -> int:
    """Delete at most `chunk` rows of `table` older than `cutoff` (readings, dead letters, alerts)."""
    column = _PURGED[table]  # a fixed set: table and column never come from input
    return conn.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {column} < %s LIMIT %s)",
        (cutoff, chunk),
    ).rowcount


# --- dead letters and usage counters ----------------------------------------------------------------
def insert_dead_letters(
    conn: psycopg.Connection, rows: Sequence[tuple[str, bytes, str, bytes, int]], keep: int
) -> int:
    """Store (topic, payload, reason, message_key, size) rows; a redelivered message is stored once.

    Only the newest `keep` dead letters are kept: older ones are deleted in the same transaction,
    so a device sending garbage forever cannot fill the disk.
    """
    inserted = 0
    for topic, payload, reason, key, size in rows:
        inserted += conn.execute(
            "INSERT INTO dead_letters (topic, payload, reason, message_key, payload_bytes) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (message_key) DO NOTHING",
            (topic, payload, reason, key, size),
        ).rowcount
    if inserted:
        conn.execute("DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - %s", (keep,))
    return inserted


def list_dead_letters(conn: psycopg.Connection, limit: int = 100) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, received_at, topic, encode(payload, 'escape') AS payload, payload_bytes, reason "
            "FROM dead_letters ORDER BY id DESC LIMIT %s",
            (limit,),
        ).fetchall()


def add_usage(conn: psycopg.Connection, name: str, amount: int) -> None:
    if amount:
        conn.execute(
            "INSERT INTO usage_counters (name, value) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = usage_counters.value + EXCLUDED.value",
            (name, amount),
        )


def usage(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, value FROM usage_counters").fetchall())


# --- alerts ---------------------------------------------------------------------------------------
def load_rules(conn: psycopg.Connection) -> list[AlertRule]:
    rows = conn.execute(
        "SELECT id, name, metric, operator, threshold, device_id, cooldown_seconds "
        "FROM alert_rules ORDER BY id"
    ).fetchall()
    return [AlertRule(*row) for row in rows]


def count_rules(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM alert_rules").fetchone()[0]


def insert_rule(conn: psycopg.Connection, fields: dict) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "INSERT INTO alert_rules (name, metric, operator, threshold, device_id, cooldown_seconds) "
            "VALUES (%(name)s, %(metric)s, %(operator)s, %(threshold)s, %(device_id)s, %(cooldown_seconds)s) "
            "RETURNING id, name, metric, operator, threshold, device_id, cooldown_seconds, created_at",
            fields,
        ).fetchone()


def list_rules(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, name, metric, operator, threshold, device_id, cooldown_seconds, created_at "
            "FROM alert_rules ORDER BY id"
        ).fetchall()


def delete_rule(conn: psycopg.Connection, rule_id: int) -> bool:
    return conn.execute("DELETE FROM alert_rules WHERE id = %s", (rule_id,)).rowcount > 0


def last_fired(conn: psycopg.Connection, rule_ids: Sequence[int]) -> dict[tuple[int, str], datetime]:
    """Latest event time per (rule, device), for cooldowns."""
    if not rule_ids:
        return {}
    rows = conn.execute(
        "SELECT rule_id, device_id, max(reading_time) FROM alert_events "
        "WHERE rule_id = ANY(%s) GROUP BY 1, 2",
        (list(rule_ids),),
    ).fetchall()
    return {(r, d): t for r, d, t in rows}


def insert_alert_events(conn: psycopg.Connection, events: Sequence[AlertEvent]) -> int:
    inserted = 0
    for e in events:
        inserted += conn.execute(
            "INSERT INTO alert_events (rule_id, rule_name, device_id, metric, operator, threshold, value, "
            "reading_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                e.rule.id,
                e.rule.name,
                e.device_id,
                e.rule.metric,
                e.rule.operator,
                e.rule.threshold,
                e.value,
                e.reading_time,
            ),
        ).rowcount
    return inserted


def alert_history(conn: psycopg.Connection, device_id: str | None, limit: int) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, rule_id, rule_name, device_id, metric, operator, threshold, value, reading_time, "
            "created_at FROM alert_events WHERE (%s::text IS NULL OR device_id = %s) "
            "ORDER BY reading_time DESC, id DESC LIMIT %s",
            (device_id, device_id, limit),
        ).fetchall()


# --- API keys -------------------------------------------------------------------------------------
_KEY_COLUMNS = "id, name, role, created_at, revoked_at"


def insert_api_key(conn: psycopg.Connection, name: str, role: str, secret_hash: bytes) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"INSERT INTO api_keys (name, role, secret_hash) VALUES (%s, %s, %s) RETURNING {_KEY_COLUMNS}",
            (name, role, secret_hash),
        ).fetchone()


def list_api_keys(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY id").fetchall()


def active_api_key(conn: psycopg.Connection, secret_hash: bytes) -> dict | None:
    """The unrevoked key with this hash, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = %s AND revoked_at IS NULL",
            (secret_hash,),
        ).fetchone()


def revoke_api_key(conn: psycopg.Connection, key_id: int) -> dict | None:
    """Mark the key revoked (kept for the audit trail); None when there is no such key."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s "
            f"RETURNING {_KEY_COLUMNS}",
            (key_id,),
        ).fetchone()
