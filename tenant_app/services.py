"""The instance's use cases: plain functions that own their transaction and raise domain errors.

Devices (with their broker accounts), ingestion over HTTP and MQTT, reads, alert rules, dead
letters, retention, API keys, sign-in and license gating all live here. The HTTP handlers in
`tenant_app.api` only parse, call one of these and map `tenant_app.errors` to status codes; the
MQTT consumer calls `ingest_messages`. SQL lives in `store`, broker accounts in `dynsec`, the
rules themselves in `readings`, `alerts`, `downsampling`, `retention`, `license_state` and `auth`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import psycopg

from licensing import AccessTokenError, KeySource, License, LicenseError, verify_access_token
from licensing.plans import ALERTS, DATA_EXPORT, HISTORY, HTTP_INGESTION, MAX_ALERT_RULES
from tenant_app import alerts, auth, license_state, retention, store
from tenant_app.config import TELEMETRY_TOPIC
from tenant_app.downsampling import DEFAULT_MAX_POINTS, bucket_seconds, check_range
from tenant_app.dynsec import DynsecError
from tenant_app.errors import (
    BrokerFailed,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unavailable,
    UnknownDevices,
)
from tenant_app.ingest import parse_message
from tenant_app.jsonsafe import check_text, printable
from tenant_app.license_state import LicenseStatus
from tenant_app.readings import METRICS, InvalidReading, Reading, validate_device_id, validate_reading

log = logging.getLogger(__name__)

MAX_BATCH = 5000  # readings per HTTP request
DEFAULT_RANGE = timedelta(hours=24)
DEAD_LETTER_MAX_PAYLOAD = 4096  # bytes of a refused message kept for inspection
DEAD_LETTER_MAX_REASON = 500
DEAD_LETTER_MAX_TOPIC = 1024  # characters of a refused message's topic (MQTT allows 65,535 bytes)


class DeviceAccounts(Protocol):
    """The broker side of a device (Mosquitto dynamic security in production)."""

    def create_device(self, device_id: str, password: str) -> None: ...

    def delete_device(self, device_id: str) -> None: ...


@dataclass(frozen=True)
class BrokerAddress:
    """Where devices reach the broker: plain MQTT, and MQTT over (secure) websockets."""

    host: str
    port: int
    websocket_url: str = ""


@dataclass
class Instance:
    """What the use cases work with; built once per process (`tenant_app.api.create_app`)."""

    customer_id: str
    connect: Callable[[], AbstractContextManager[psycopg.Connection]]
    license: Callable[[], LicenseStatus]
    clock: Callable[[], datetime]
    broker: BrokerAddress
    accounts: DeviceAccounts | None = None
    access_keys: KeySource | None = None  # verifies access tokens (the license's key source)
    issuer: str = "iotistic-billing"
    dead_letter_max_rows: int = 10_000


# --- license gating ---------------------------------------------------------------------------------
def _readable(inst: Instance, feature: str | None = None) -> License:
    lic = license_state.require_readable(inst.license())
    if feature is not None:
        license_state.require_feature(lic, feature)
    return lic


def _writable(inst: Instance, feature: str | None = None) -> License:
    lic = license_state.require_writable(inst.license())
    if feature is not None:
        license_state.require_feature(lic, feature)
    return lic


def license_summary(inst: Instance) -> dict:
    """The license as the dashboard shows it (state, plan, features, limits, expiry, trial)."""
    return inst.license().summary(inst.clock())


# --- sign-in ------------------------------------------------------------------------------------------
def authenticate(inst: Instance, credential: auth.Credential) -> auth.Principal:
    """The caller behind a credential, or Unauthenticated saying why it is refused."""
    if credential.scheme == "basic":
        return _authenticate_device(inst, credential.username, credential.password)
    if credential.is_api_key:
        with inst.connect() as conn:
            key = store.active_api_key(conn, auth.hash_secret(credential.token))
        if key is None:
            raise Unauthenticated("API key not recognised (unknown or revoked)")
        return auth.Principal("api_key", key["name"], key["role"])
    if inst.access_keys is None:
        raise Unauthenticated("this instance has no key to verify access tokens (LICENSE_JWKS_URL)")
    try:
        token = verify_access_token(
            credential.token,
            inst.access_keys,
            customer_id=inst.customer_id,
            issuer=inst.issuer,
            now=inst.clock(),
        )
    except (AccessTokenError, LicenseError) as e:
        raise Unauthenticated(
            str(e) if isinstance(e, AccessTokenError) else f"access token refused: {e}"
        ) from None
    return auth.Principal("user", token.subject, token.role)


def _authenticate_device(inst: Instance, device_id: str, password: str) -> auth.Principal:
    refused = Unauthenticated("device credentials not recognised")
    try:
        validate_device_id(device_id)
    except InvalidReading:
        raise refused from None
    with inst.connect() as conn:
        stored = store.device_credential(conn, device_id)
    if not auth.secret_matches(password, stored):
        raise refused
    return auth.Principal("device", device_id, auth.ROLE_DEVICE, device_id=device_id)


# --- API keys ---------------------------------------------------------------------------------------
# Not gated by the license: who may reach the instance is managed even while the license has
# expired (a read-only key is how a lapsed customer exports their data).
def create_api_key(inst: Instance, name: object, role: object) -> tuple[dict, str]:
    """A new key and its secret (shown once; only its hash is stored)."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        raise InvalidInput("'name' must be a string of 1 to 100 characters")
    check_text(name, "'name'")
    try:
        role = auth.check_role(role)
    except ValueError as e:
        raise InvalidInput(f"'role': {e}") from None
    secret = auth.new_api_key()
    with inst.connect() as conn, conn.transaction():
        row = store.insert_api_key(conn, name.strip(), role, auth.hash_secret(secret))
    log.info("api key created", extra={"key_id": row["id"], "key_name": row["name"], "role": role})
    return row, secret


def list_api_keys(inst: Instance) -> list[dict]:
    with inst.connect() as conn:
        return store.list_api_keys(conn)


def revoke_api_key(inst: Instance, key_id: int) -> dict:
    with inst.connect() as conn, conn.transaction():
        row = store.revoke_api_key(conn, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id}")
    log.info("api key revoked", extra={"key_id": key_id})
    return row


# --- devices ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Registration:
    device: dict
    credentials: dict


def _device_or_404(conn: psycopg.Connection, device_id: str) -> dict:
    try:
        validate_device_id(device_id)
    except InvalidReading:
        raise NotFound(f"no device {printable(device_id, 80)!r}") from None
    row = store.get_device(conn, device_id)
    if row is None:
        raise NotFound(f"no device {device_id!r}")
    return row


def list_devices(inst: Instance) -> list[dict]:
    _readable(inst)
    with inst.connect() as conn:
        return store.list_devices(conn)


def get_device(inst: Instance, device_id: str) -> dict:
    _readable(inst)
    with inst.connect() as conn:
        return _device_or_404(conn, device_id)


def register_device(inst: Instance, device_id: object, name: object = "") -> Registration:
    """Create the device row and its broker account together: either both exist or neither.

    The password is returned once; the broker and the database keep only hashes of it.
    """
    lic = _writable(inst)
    try:
        device_id = validate_device_id(device_id)
    except InvalidReading as e:
        raise InvalidInput(f"'id': {e}") from None
    if name is None:
        name = ""
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidInput("'name' must be a string of at most 200 characters")
    check_text(name, "'name'")
    if inst.accounts is None:
        raise Unavailable("device registration is unavailable: no MQTT admin account is configured")
    password = auth.new_device_password()
    account_created = False
    try:
        with inst.connect() as conn, conn.transaction():
            store.lock_devices(conn)  # held until commit: concurrent registrations count one by one
            license_state.check_device_limit(lic, store.count_devices(conn))
            row = store.insert_device(conn, device_id, name, auth.hash_secret(password))
            if row is None:
                raise Conflict(f"device {device_id!r} is already registered")
            try:
                inst.accounts.create_device(device_id, password)
                account_created = True
            except DynsecError as e:
                raise BrokerFailed(f"the MQTT broker did not create the device account: {e}") from None
    except Exception:
        # Rolled back: remove the account too, so no half-registered device remains.
        if account_created:
            _remove_account(inst, device_id)
        raise
    log.info("device registered", extra={"device_id": device_id})
    b = inst.broker
    credentials = {
        "host": b.host,
        "port": b.port,
        "websocket_url": b.websocket_url or None,
        "client_id": device_id,  # the broker accepts this device under this client id only
        "username": device_id,
        "password": password,
        "topic": TELEMETRY_TOPIC.format(device_id=device_id),
        "qos": 1,
    }
    return Registration(row, credentials)


def _remove_account(inst: Instance, device_id: str) -> None:
    try:
        inst.accounts.delete_device(device_id)
    except DynsecError:
        log.warning("could not remove a half-created device account", extra={"device_id": device_id})


def delete_device(inst: Instance, device_id: str) -> None:
    """Revoke the broker account first (the device can no longer publish), then delete the rows."""
    _writable(inst)
    with inst.connect() as conn:
        _device_or_404(conn, device_id)
    if inst.accounts is not None:
        try:
            inst.accounts.delete_device(device_id)
        except DynsecError as e:
            raise BrokerFailed(f"the MQTT broker did not remove the device account: {e}") from None
    with inst.connect() as conn, conn.transaction():
        store.delete_device(conn, device_id)
    log.info("device deleted", extra={"device_id": device_id})


# --- ingestion ---------------------------------------------------------------------------------------
@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    alerts: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (topic, reason), for logs

    def add(self, other: IngestResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.dead_letters += other.dead_letters
        self.alerts += other.alerts
        self.rejected.extend(other.rejected)


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


def ingest_readings(inst: Instance, items: object, as_device: str | None = None) -> IngestResult:
    """HTTP ingestion: one reading or a list, all stored or none (the first bad one is named).

    A device (`as_device`) may only send its own readings; people and API keys name the device
    in each reading.
    """
    _writable(inst, HTTP_INGESTION)
    batch = items if isinstance(items, list) else [items]
    if not batch or len(batch) > MAX_BATCH:
        raise InvalidInput(f"send between 1 and {MAX_BATCH} readings")
    now = inst.clock()
    readings = []
    for i, item in enumerate(batch):
        if as_device is not None and isinstance(item, dict) and item.get("device_id", as_device) != as_device:
            raise Forbidden(f"device {as_device!r} may only send its own readings")
        try:
            readings.append(validate_reading(item, device_id=as_device, now=now))
        except InvalidReading as e:
            raise InvalidReading(f"reading {i}: {e}" if len(batch) > 1 else str(e)) from None
    with inst.connect() as conn, conn.transaction():
        unknown = {r.device_id for r in readings} - store.known_devices(conn, (r.device_id for r in readings))
        if unknown:
            raise UnknownDevices(f"unknown device(s): {', '.join(sorted(unknown))}; register them first")
        return store_readings(conn, readings)


# Errors one stored row can cause (bad data, or a rule tripping over it): the batch is split to
# find that row. Anything else (connection lost, database down) fails the whole batch, to retry.
ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, ValueError, ArithmeticError, TypeError)


def _message_key(topic: str, payload: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()


def ingest_messages(
    conn: psycopg.Connection,
    messages: Sequence[tuple[str, bytes]],
    now: datetime,
    *,
    dead_letter_max_rows: int = 10_000,
) -> IngestResult:
    """Validate and store a batch of MQTT messages; every message ends stored or dead-lettered.

    One transaction per batch in the normal case. Messages that cannot be parsed, and readings of
    unknown devices, go to `dead_letters` in that same transaction. Should storing the batch fail
    because of one row, the batch is split until that row is alone; it is dead-lettered and the
    rest stored, so one poison message never makes a batch retry forever. A failure that is not
    about a row (the database is down) is raised for the caller to retry the batch later.
    """
    parsed: list[tuple[str, bytes, Reading]] = []
    rejects: list[tuple[str, bytes, str]] = []
    for topic, payload in messages:
        try:
            parsed.append((topic, payload, parse_message(topic, payload, now)))
        except InvalidReading as e:
            rejects.append((topic, payload, str(e)))
        except Exception as e:  # whatever a device sends must end in a dead letter, never a crash
            rejects.append((topic, payload, f"could not be parsed: {e.__class__.__name__}: {e}"))
    result = IngestResult()
    _store_isolating(conn, parsed, rejects, result, dead_letter_max_rows)
    return result


def _store_isolating(
    conn: psycopg.Connection,
    parsed: list[tuple[str, bytes, Reading]],
    rejects: list[tuple[str, bytes, str]],
    result: IngestResult,
    keep: int,
) -> None:
    try:
        result.add(_store_batch(conn, parsed, rejects, keep))
        return
    except ROW_ERRORS as e:
        if not parsed:
            raise  # the dead letters themselves failed: not a row problem we can isolate
        error = e
    if len(parsed) == 1:
        topic, payload, _ = parsed[0]
        reason = f"could not be stored: {error.__class__.__name__}: {str(error).splitlines()[0][:200]}"
        log.warning("message isolated from its batch", extra={"topic": topic, "reason": reason})
        result.add(_store_batch(conn, [], [*rejects, (topic, payload, reason)], keep))
        return
    half = len(parsed) // 2
    _store_isolating(conn, parsed[:half], rejects, result, keep)
    _store_isolating(conn, parsed[half:], [], result, keep)


def _store_batch(
    conn: psycopg.Connection,
    parsed: list[tuple[str, bytes, Reading]],
    rejects: list[tuple[str, bytes, str]],
    keep: int,
) -> IngestResult:
    rejected = list(rejects)
    result = IngestResult()
    store.ensure_stage(conn)  # before the transaction, so that a rollback keeps it
    with conn.transaction():
        if parsed:
            stored, unknown, new_rows = store.insert_readings_staged(conn, [r for _, _, r in parsed])
            accepted = len(parsed)
            if unknown:
                for topic, payload, r in parsed:
                    if r.device_id in unknown:
                        accepted -= 1
                        rejected.append((topic, payload, f"unknown device {r.device_id!r} (not registered)"))
            result.stored, result.duplicates = stored, accepted - stored
            if new_rows:
                rules = store.load_rules(conn)
                events = alerts.evaluate(rules, new_rows, store.last_fired(conn, [r.id for r in rules]))
                result.alerts = store.insert_alert_events(conn, events)
        dead = [
            (
                printable(topic, DEAD_LETTER_MAX_TOPIC),
                payload[:DEAD_LETTER_MAX_PAYLOAD],
                printable(reason, DEAD_LETTER_MAX_REASON),
                _message_key(topic, payload),
                len(payload),
            )
            for topic, payload, reason in rejected
        ]
        result.dead_letters = store.insert_dead_letters(conn, dead, keep) if dead else 0
        store.add_usage(conn, "dead_letters", result.dead_letters)
    result.rejected = [(t, reason) for t, _, reason in rejected]
    return result


def dead_letters(inst: Instance, limit: int) -> dict:
    """Messages the consumer could not store (newest first, with the reason) and the usage counters."""
    _readable(inst)
    with inst.connect() as conn:
        return {"dead_letters": store.list_dead_letters(conn, limit), "usage": store.usage(conn)}


# --- reads ------------------------------------------------------------------------------------------
def default_range(inst: Instance, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The range asked for, defaulting to the 24 hours up to now (or up to `end`)."""
    end = end or inst.clock()
    return (start or end - DEFAULT_RANGE), end


def device_readings(
    inst: Instance,
    device_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> dict:
    """Raw rows when they fit in `max_points`, else averages over equal time buckets."""
    _readable(inst, HISTORY)
    start, end = default_range(inst, start, end)
    check_range(start, end, max_points)
    with inst.connect() as conn:
        _device_or_404(conn, device_id)
        count = store.count_readings(conn, device_id, start, end, max_points + 1)
        bucket = bucket_seconds(start, end, count, max_points)
        if bucket is None:
            rows = store.readings_raw(conn, device_id, start, end, max_points)
        else:
            rows = store.readings_bucketed(conn, device_id, start, end, bucket)
    return {
        "device_id": device_id,
        "from": start,
        "to": end,
        "bucket_seconds": bucket,
        "readings": rows,
    }


def latest_readings(inst: Instance) -> list[dict]:
    _readable(inst)
    with inst.connect() as conn:
        return store.latest_per_device(conn)


def export_csv(
    inst: Instance, device_id: str, start: datetime | None = None, end: datetime | None = None
) -> Iterator[str]:
    """Every reading of the range as CSV chunks (checked now; rows streamed as the caller reads)."""
    _readable(inst, DATA_EXPORT)
    start, end = default_range(inst, start, end)
    if end <= start:
        raise InvalidInput("'to' must be after 'from'")
    with inst.connect() as conn:
        _device_or_404(conn, device_id)

    def chunks() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["timestamp", *METRICS])
        with inst.connect() as conn:
            for i, row in enumerate(store.iter_readings(conn, device_id, start, end)):
                writer.writerow([row[0].isoformat(), *("" if v is None else v for v in row[1:])])
                if i % 1000 == 999:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    return chunks()


# --- alerts -----------------------------------------------------------------------------------------
def list_rules(inst: Instance) -> list[dict]:
    _readable(inst, ALERTS)
    with inst.connect() as conn:
        return store.list_rules(conn)


def create_rule(inst: Instance, data: object) -> dict:
    """Validate and store a threshold rule, within the plan's `maxAlertRules`."""
    lic = _writable(inst, ALERTS)
    fields = alerts.validate_rule(data)
    with inst.connect() as conn, conn.transaction():
        limit = lic.limit(MAX_ALERT_RULES)
        if limit is not None and store.count_rules(conn) >= limit:
            raise license_state.LicenseDenied(
                403, f"alert rule limit reached: the {lic.plan} plan allows {limit} rules"
            )
        return store.insert_rule(conn, fields)


def delete_rule(inst: Instance, rule_id: int) -> None:
    _writable(inst, ALERTS)
    with inst.connect() as conn, conn.transaction():
        if not store.delete_rule(conn, rule_id):
            raise NotFound(f"no alert rule {rule_id}")


def alert_history(inst: Instance, device_id: str | None, limit: int) -> list[dict]:
    _readable(inst, ALERTS)
    with inst.connect() as conn:
        return store.alert_history(conn, device_id, limit)


# --- retention --------------------------------------------------------------------------------------
def run_retention(inst: Instance) -> retention.PurgeResult | None:
    """Delete what the license's retention says is too old; None (nothing deleted) without a license."""
    lic = inst.license().license
    if lic is None:
        log.warning("retention skipped: no verified license, so no retention period is known")
        return None
    cutoff = retention.retention_cutoff(inst.clock(), retention.retention_days(lic))
    result = retention.PurgeResult(cutoff)
    with inst.connect() as conn:
        for table, attr in retention.PURGED_TABLES:
            while True:
                with conn.transaction():
                    deleted = store.delete_older_than(conn, table, cutoff, retention.DELETE_CHUNK)
                setattr(result, attr, getattr(result, attr) + deleted)
                if deleted < retention.DELETE_CHUNK:
                    break
    log.info(
        "retention purge done",
        extra={
            "cutoff": cutoff.isoformat(),
            "readings": result.readings,
            "dead_letters": result.dead_letters,
        },
    )
    return result
