"""The use cases without HTTP: plain calls on `tenant_app.services` against the real database.

The broker side is a small in-memory stand-in here (the real broker is exercised by the HTTP and
MQTT tests); everything else is the production code path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from licensing import PemKeySource
from tenant_app import auth, services
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
from tenant_app.license_state import LicenseDenied, evaluate
from tests.tenant_app.conftest import CUSTOMER

NOW = datetime.now(UTC).replace(microsecond=0)


class Accounts:
    """Broker accounts in memory; `fail_next` makes the next call raise like an unreachable broker."""

    def __init__(self) -> None:
        self.passwords: dict[str, str] = {}
        self.fail_next = False

    def _maybe_fail(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise DynsecError("broker unreachable")

    def create_device(self, device_id: str, password: str) -> None:
        self._maybe_fail()
        self.passwords[device_id] = password

    def delete_device(self, device_id: str) -> None:
        self._maybe_fail()
        self.passwords.pop(device_id, None)


@pytest.fixture
def pool(db):
    pool = ConnectionPool(db, min_size=1, max_size=2, open=True)
    yield pool
    pool.close()


@pytest.fixture
def make_instance(pool, keys):
    def make(*, plan: str = "starter", days: float = 14, accounts=None, **license_kw) -> services.Instance:
        source = PemKeySource(keys.public_pem)
        status = evaluate(
            keys.license(plan=plan, days=days, **license_kw), source, CUSTOMER, "iotistic-billing", NOW
        )
        return services.Instance(
            customer_id=CUSTOMER,
            connect=pool.connection,
            license=lambda: status,
            clock=lambda: NOW,
            broker=services.BrokerAddress("mqtt.example", 1883, "wss://acme.example/mqtt"),
            accounts=Accounts() if accounts is None else accounts,
            access_keys=source,
        )

    return make


def rows(db: str, table: str) -> int:
    with psycopg.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_registering_a_device_creates_its_account_and_returns_its_addresses_once(make_instance, db):
    inst = make_instance()
    reg = services.register_device(inst, "greenhouse-1", "Greenhouse")
    creds = reg.credentials
    assert creds["websocket_url"] == "wss://acme.example/mqtt" and creds["client_id"] == "greenhouse-1"
    assert inst.accounts.passwords["greenhouse-1"] == creds["password"]
    # Only a hash of the password is kept: it can sign the device in, and is not the password.
    principal = services.authenticate(
        inst, auth.Credential("basic", username="greenhouse-1", password=creds["password"])
    )
    assert principal == auth.Principal("device", "greenhouse-1", "device", device_id="greenhouse-1")
    with psycopg.connect(db) as conn:
        stored = conn.execute("SELECT credential_hash FROM devices").fetchone()[0]
    assert creds["password"].encode() not in bytes(stored)
    with pytest.raises(Conflict):
        services.register_device(inst, "greenhouse-1")


def test_a_broker_failure_leaves_no_device_behind(make_instance, db):
    inst = make_instance()
    inst.accounts.fail_next = True
    with pytest.raises(BrokerFailed, match="did not create the device account"):
        services.register_device(inst, "d1")
    assert rows(db, "devices") == 0 and inst.accounts.passwords == {}
    without_broker = services.Instance(**{**inst.__dict__, "accounts": None})
    with pytest.raises(Unavailable, match="no MQTT admin account"):
        services.register_device(without_broker, "d1")


def test_bad_ids_and_names_are_invalid_input_and_unknown_devices_are_not_found(make_instance):
    inst = make_instance()
    for bad in ("Not Valid!", "", None, 42, "iotistic-ingest", "a" * 64):
        with pytest.raises(InvalidInput, match="'id'"):
            services.register_device(inst, bad)
    for bad_name in ("x\x00y", "\ud800", ["list"], "n" * 201):
        with pytest.raises(InvalidInput, match="'name'"):
            services.register_device(inst, "d1", bad_name)
    for device in ("nope", "NOPE\x00", "../etc"):
        with pytest.raises(NotFound):
            services.get_device(inst, device)


def test_the_device_limit_and_the_license_gate_writes(make_instance):
    inst = make_instance(plan="starter")
    for i in range(5):
        services.register_device(inst, f"d{i}")
    with pytest.raises(LicenseDenied, match="allows 5 devices") as e:
        services.register_device(inst, "d5")
    assert e.value.status == 403
    expired = make_instance(days=-1)
    with pytest.raises(LicenseDenied) as e:
        services.ingest_readings(expired, {"device_id": "d0", "temperature": 20})
    assert e.value.status == 402
    assert len(services.list_devices(expired)) == 5  # reads still work


def test_http_ingestion_is_all_or_nothing_and_a_device_only_sends_its_own(make_instance, db):
    inst = make_instance()
    services.register_device(inst, "d1")
    services.register_device(inst, "d2")
    good = {"device_id": "d1", "temperature": 21.5, "timestamp": (NOW - timedelta(minutes=1)).isoformat()}
    with pytest.raises(InvalidInput, match="reading 1: humidity 101"):
        services.ingest_readings(inst, [good, {"device_id": "d1", "humidity": 101}])
    with pytest.raises(UnknownDevices, match="ghost"):
        services.ingest_readings(inst, [good, {"device_id": "ghost", "temperature": 1}])
    assert rows(db, "sensor_readings") == 0
    assert services.ingest_readings(inst, good).stored == 1
    # A device's reading needs no device_id; naming another device is refused.
    assert services.ingest_readings(inst, {"temperature": 22}, as_device="d2").stored == 1
    with pytest.raises(Forbidden, match="only send its own"):
        services.ingest_readings(inst, {"device_id": "d1", "temperature": 22}, as_device="d2")


def test_timestamps_outside_2000_to_now_are_refused(make_instance):
    inst = make_instance()
    services.register_device(inst, "d1")
    for ts in (
        "1999-12-31T23:59:59Z",
        0,
        946684799,
        "9999-12-31T00:00:00",
        1e12,
        10**300,
        "0001-01-01T00:00:00+14:00",
        "2026-01-01T00:00:00\x00",  # fromisoformat alone stops at the NUL and accepts it
    ):
        with pytest.raises(InvalidInput, match="timestamp"):
            services.ingest_readings(inst, {"device_id": "d1", "temperature": 20, "timestamp": ts})
    with pytest.raises(InvalidInput, match="in the future"):
        services.ingest_readings(
            inst, {"device_id": "d1", "temperature": 20, "timestamp": (NOW + timedelta(hours=1)).isoformat()}
        )


def test_alert_rules_refuse_non_finite_thresholds_and_respect_the_plan_limit(make_instance):
    inst = make_instance(plan="starter")
    for bad in (float("nan"), float("inf"), 10**400, "30", True):
        with pytest.raises(InvalidInput, match="threshold"):
            services.create_rule(inst, {"metric": "temperature", "operator": ">", "threshold": bad})
    for i in range(5):
        services.create_rule(inst, {"metric": "temperature", "operator": ">", "threshold": i})
    with pytest.raises(LicenseDenied, match="allows 5 rules"):
        services.create_rule(inst, {"metric": "temperature", "operator": ">", "threshold": 9})
    with pytest.raises(NotFound):
        services.delete_rule(inst, 999)


def test_api_keys_are_stored_hashed_shown_once_and_revocable(make_instance, db):
    inst = make_instance()
    key, secret = services.create_api_key(inst, "nightly export", "read")
    assert secret.startswith("iotk_") and "secret" not in key
    with psycopg.connect(db) as conn:
        (stored,) = conn.execute("SELECT secret_hash FROM api_keys").fetchone()
    assert secret.encode() not in bytes(stored)
    who = services.authenticate(inst, auth.Credential("bearer", token=secret))
    assert (who.kind, who.name, who.role) == ("api_key", "nightly export", "read")
    auth.authorize(who, auth.READ)
    with pytest.raises(Forbidden, match="may not make changes"):
        auth.authorize(who, auth.WRITE)
    services.revoke_api_key(inst, key["id"])
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        services.authenticate(inst, auth.Credential("bearer", token=secret))
    with pytest.raises(InvalidInput, match="role"):
        services.create_api_key(inst, "x", "root")


def test_access_tokens_sign_people_in_with_their_role(make_instance, keys):
    inst = make_instance()
    who = services.authenticate(inst, auth.Credential("bearer", token=keys.token(role="read", issued_at=NOW)))
    assert (who.kind, who.role) == ("user", "read")
    refused = {
        "another customer": keys.token(customer="globex", issued_at=NOW),
        "expired": keys.token(issued_at=NOW - timedelta(hours=1)),
        "issued in the future": keys.token(issued_at=NOW + timedelta(hours=1)),
        "a license": keys.license(),
        "garbage": "not.a.jwt",
    }
    for what, token in refused.items():
        with pytest.raises(Unauthenticated):
            services.authenticate(inst, auth.Credential("bearer", token=token))
            pytest.fail(f"{what} was accepted")


def test_authorization_headers_are_parsed_strictly():
    assert auth.parse_authorization("Bearer abc").token == "abc"
    basic = auth.parse_authorization("Basic ZDE6c2VjcmV0")  # d1:secret
    assert (basic.username, basic.password) == ("d1", "secret")
    for bad in (None, "", "Bearer", "Token abc", "Basic !!!", "Basic ZDE=", "Bearer " + "x" * 9000):
        with pytest.raises(Unauthenticated):
            auth.parse_authorization(bad)
    assert auth.permission_for("GET") == auth.READ and auth.permission_for("DELETE") == auth.WRITE
    device = auth.Principal("device", "d1", auth.ROLE_DEVICE, device_id="d1")
    auth.authorize(device, auth.INGEST)
    with pytest.raises(Forbidden):
        auth.authorize(device, auth.READ)


def test_retention_deletes_only_what_the_license_says_is_old(make_instance, db):
    inst = make_instance(plan="starter")  # 30 days
    services.register_device(inst, "d1")
    with psycopg.connect(db) as conn:
        for age in (0, 29, 31, 400):
            conn.execute(
                "INSERT INTO sensor_readings (device_id, timestamp, temperature) VALUES ('d1', %s, 20)",
                (NOW - timedelta(days=age),),
            )
    result = services.run_retention(inst)
    assert result.readings == 2 and result.cutoff == NOW - timedelta(days=30)
    assert rows(db, "sensor_readings") == 2
