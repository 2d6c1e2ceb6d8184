"""Domain rules as plain functions: validation, downsampling, alerts, retention, license gates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from licensing import PemKeySource
from tenant_app import license_state
from tenant_app.alerts import AlertRule, InvalidRule, evaluate, validate_rule
from tenant_app.config import ConfigError, Settings
from tenant_app.downsampling import InvalidRange, bucket_seconds
from tenant_app.ingest import device_from_topic, parse_message
from tenant_app.readings import InvalidReading, Reading, validate_reading
from tenant_app.retention import retention_cutoff, retention_days
from tests.tenant_app.conftest import CUSTOMER

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_a_full_bme688_reading_is_accepted_with_its_timestamp():
    r = validate_reading(
        {
            "device_id": "d1",
            "temp": 22.5,
            "humidity": 45.2,
            "pressure": 1013.2,
            "gas_resistance": 120000,
            "timestamp": "2026-11-25T11:59:00Z",
        },
        now=NOW,
    )
    assert r == Reading("d1", datetime(2026, 11, 25, 11, 59, tzinfo=UTC), 22.5, 45.2, 1013.2, 120000.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", 120, "temperature 120 °C is outside -40..85"),
        ("humidity", -1, "humidity -1 % is outside 0..100"),
        ("pressure", 50, "pressure 50 hPa is outside 300..1100"),
        ("gas_resistance", 0, "gas_resistance 0 Ω is outside"),
        ("temperature", "hot", "temperature must be a number"),
        ("temperature", True, "temperature must be a number"),
    ],
)
def test_out_of_range_or_non_numeric_values_are_refused(field, value, message):
    with pytest.raises(InvalidReading, match=message):
        validate_reading({"device_id": "d1", field: value}, now=NOW)


VALUES = [
    20.5, 20, -40, -40.0, 85, 85.0, 85.0001, -40.5, 0, 1e9, 1.0, 1100, 300, 299.99, True, False, "20",
    [], {}, float("nan"), float("inf"), -float("inf"), 2**53, -(2**53), 2**53 + 1, 10**400, -(10**400),
]  # fmt: skip


def expected_outcome(metric: str, value: object) -> float | str:
    """What the rules say about one value: the stored float, or the refusal's message."""
    low, high = {"temperature": (-40, 85), "humidity": (0, 100), "pressure": (300, 1100)}.get(
        metric, (1, 1e9)
    )
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, int) and abs(value) > 2**53)
        or value != value
        or value in (float("inf"), -float("inf"))
    ):
        return f"{metric} must be a number"
    if not low <= value <= high:
        return "is outside"
    return float(value)


@pytest.mark.parametrize("key", ["temperature", "temp", "humidity", "pressure", "gas_resistance", "gas"])
def test_every_kind_of_value_is_stored_or_refused_by_the_same_rules(key):
    """The usual case (an in-range float or int) takes a shortcut; everything else the full checks."""
    metric = {"temp": "temperature", "gas": "gas_resistance"}.get(key, key)
    for value in VALUES:
        want = expected_outcome(metric, value)
        if isinstance(want, float):
            got = validate_reading({"device_id": "d1", key: value}, now=NOW).value(metric)
            assert got == want and type(got) is float, (key, value)
        else:
            with pytest.raises(InvalidReading, match=want):
                validate_reading({"device_id": "d1", key: value}, now=NOW)


@pytest.mark.parametrize(
    "ts", [NOW.timestamp(), int(NOW.timestamp()), 946684800, 946684799.9, 4102444800, True, float("nan"), "x"]
)
def test_timestamps_take_the_same_rules_in_the_shortcut(ts):
    reading = {"device_id": "d1", "temperature": 20, "ts": ts}
    if type(ts) in (int, float) and 946684800 <= ts < 4102444800:
        assert validate_reading(reading, now=NOW).timestamp == datetime.fromtimestamp(ts, UTC)
    else:
        with pytest.raises(InvalidReading, match="timestamp"):
            validate_reading(reading, now=NOW)


def test_a_device_id_found_valid_once_is_still_checked_as_a_string():
    validate_reading({"device_id": "d1", "temperature": 20}, now=NOW)
    with pytest.raises(InvalidReading, match="device id"):
        validate_reading({"device_id": ["d1"], "temperature": 20}, now=NOW)


def test_missing_values_bad_device_and_future_timestamps_are_refused():
    with pytest.raises(InvalidReading, match="at least one of"):
        validate_reading({"device_id": "d1"}, now=NOW)
    with pytest.raises(InvalidReading, match="device id must be"):
        validate_reading({"device_id": "Bad/Id", "temperature": 20}, now=NOW)
    with pytest.raises(InvalidReading, match="reserved"):
        validate_reading({"device_id": "iotistic-admin", "temperature": 20}, now=NOW)
    with pytest.raises(InvalidReading, match="in the future"):
        validate_reading({"device_id": "d1", "temperature": 20, "ts": NOW.timestamp() + 3600}, now=NOW)


def test_mqtt_messages_take_the_device_from_the_topic_and_need_a_timestamp():
    assert device_from_topic("sensor/d1/telemetry") == "d1"
    assert device_from_topic("sensor/a/b/telemetry") is None
    r = parse_message(
        "sensor/d1/telemetry", b'{"device_id": "spoof", "temperature": 20, "ts": 1764000000}', NOW
    )
    assert r.device_id == "d1"
    with pytest.raises(InvalidReading, match="idempotency key"):
        parse_message("sensor/d1/telemetry", b'{"temperature": 20}', NOW)
    with pytest.raises(InvalidReading, match="not JSON"):
        parse_message("sensor/d1/telemetry", b"\xff{", NOW)


def test_short_ranges_are_raw_and_long_ranges_get_nice_buckets():
    day = timedelta(days=1)
    assert bucket_seconds(NOW - day, NOW, row_count=300, max_points=500) is None
    assert bucket_seconds(NOW - day, NOW, row_count=501, max_points=500) == 300  # 86400/500 -> 173 -> 300
    assert bucket_seconds(NOW - 30 * day, NOW, row_count=10**6, max_points=500) == 7200
    assert bucket_seconds(NOW - 3650 * day, NOW, row_count=10**6, max_points=100) % 86400 == 0
    with pytest.raises(InvalidRange):
        bucket_seconds(NOW, NOW - day, row_count=1, max_points=500)


def test_alert_rules_fire_once_per_cooldown_per_device():
    rule = AlertRule(1, "hot", "temperature", ">", 30.0, cooldown_seconds=300)
    readings = [Reading("d1", NOW + timedelta(seconds=10 * i), temperature=31.0) for i in range(60)]
    readings.append(Reading("d2", NOW, temperature=29.0))
    events = evaluate([rule], readings, last_fired={})
    assert [(e.device_id, e.reading_time - NOW) for e in events] == [
        ("d1", timedelta(0)),
        ("d1", timedelta(seconds=300)),
    ]
    assert evaluate([rule], readings[:5], last_fired={(1, "d1"): NOW - timedelta(seconds=60)}) == []


def test_alert_rules_are_validated():
    assert validate_rule({"metric": "humidity", "operator": "<", "threshold": 20})["name"] == "humidity < 20"
    for bad, message in (
        ({"metric": "co2", "operator": ">", "threshold": 1}, "metric must be"),
        ({"metric": "humidity", "operator": "=", "threshold": 1}, "operator must be"),
        ({"metric": "humidity", "operator": ">", "threshold": "x"}, "threshold must be"),
    ):
        with pytest.raises(InvalidRule, match=message):
            validate_rule(bad)


def test_retention_cutoff_follows_the_license_with_a_90_day_default(keys):
    from licensing import verify_license

    lic = verify_license(keys.license(plan="starter"), PemKeySource(keys.public_pem), customer_id=CUSTOMER)
    assert retention_days(lic) == 30
    assert retention_days(None) == 90
    assert retention_cutoff(NOW, 30) == NOW - timedelta(days=30)
    with pytest.raises(ValueError):
        retention_cutoff(NOW, 0)


def test_license_gates(keys):
    source = PemKeySource(keys.public_pem)
    now = datetime.now(UTC)
    valid = license_state.evaluate(keys.license(), source, CUSTOMER, "iotistic-billing", now)
    expired = license_state.evaluate(keys.license(days=-1), source, CUSTOMER, "iotistic-billing", now)
    missing = license_state.evaluate(None, source, CUSTOMER, "iotistic-billing", now)
    assert (valid.state, expired.state, missing.state) == ("valid", "expired", "missing")
    assert license_state.require_writable(valid).plan == "starter"
    with pytest.raises(license_state.LicenseDenied) as e:
        license_state.require_writable(expired)
    assert e.value.status == 402 and "reading existing data still works" in e.value.message
    assert license_state.require_readable(expired).plan == "starter"
    with pytest.raises(license_state.LicenseDenied) as e:
        license_state.require_readable(missing)
    assert e.value.status == 403
    with pytest.raises(
        license_state.LicenseDenied, match="'data_export' is not included in the starter plan"
    ):
        license_state.require_feature(valid.license, "data_export")
    license_state.check_device_limit(valid.license, 4)
    with pytest.raises(license_state.LicenseDenied, match="allows 5 devices"):
        license_state.check_device_limit(valid.license, 5)


def test_settings_come_from_the_environment_in_one_place():
    s = Settings.from_env(
        {"CUSTOMER_ID": "acme", "DATABASE_URL": "postgresql://x", "MQTT_BROKER": "mqtt://mq:1884"}
    )
    assert (s.mqtt_host, s.mqtt_port, s.api_port, s.consumer_client_id) == (
        "mq",
        1884,
        3001,
        "iotistic-ingest-acme",
    )
    with pytest.raises(ConfigError, match="CUSTOMER_ID"):
        Settings.from_env({"DATABASE_URL": "postgresql://x"})
    with pytest.raises(ConfigError, match="API_PORT='x'"):
        Settings.from_env({"CUSTOMER_ID": "a", "DATABASE_URL": "d", "API_PORT": "x"})
