"""Retention deletes exactly what the license says is too old; exporter metrics come from the database."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tenant_app.exporter import create_app as create_exporter
from tests.tenant_app.conftest import CUSTOMER
from tests.tenant_app.helpers import Server, http, wait_for
from tests.tenant_app.test_ingestion import register

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def insert_ages(db: str, device: str, ages: list[timedelta]) -> None:
    with psycopg.connect(db) as conn:
        for age in ages:
            conn.execute(
                "INSERT INTO sensor_readings (device_id, timestamp, temperature) VALUES (%s, %s, 20)",
                (device, NOW - age),
            )


def remaining_ages(db: str, device: str) -> list[timedelta]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT timestamp FROM sensor_readings WHERE device_id = %s ORDER BY timestamp DESC", (device,)
        ).fetchall()
    return [NOW - r[0] for r in rows]


@pytest.mark.parametrize(("plan", "days"), [("starter", 30), ("professional", 90)])
def test_retention_deletes_older_than_the_license_allows_and_nothing_newer(
    plan, days, keys, license_file, start_api, settings
):
    license_file.write_text(keys.license(plan=plan, issued_at=NOW - timedelta(days=1), days=30))
    api = start_api(clock=lambda: NOW)
    device = register(api)["username"]
    just_inside = timedelta(days=days) - timedelta(seconds=1)
    ages = [
        timedelta(0),
        timedelta(days=1),
        just_inside,
        timedelta(days=days, seconds=1),
        timedelta(days=400),
    ]
    insert_ages(settings.database_url, device, ages)

    result = api.app.extensions["iotistic"].run_retention()
    assert result.readings == 2 and result.cutoff == NOW - timedelta(days=days)
    assert remaining_ages(settings.database_url, device) == [timedelta(0), timedelta(days=1), just_inside]
    assert api.call("GET", "/health").body["retention"]["deleted_readings"] == 2


def test_retention_runs_periodically_in_the_api(keys, license_file, start_api, settings):
    api = start_api(settings.with_(retention_interval_seconds=0.2))
    device = register(api)["username"]
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO sensor_readings (device_id, timestamp, temperature) "
            "VALUES (%s, now() - interval '31 days', 1), (%s, now() - interval '29 days', 2)",
            (device, device),
        )
    since_2000 = f"/api/devices/{device}/readings?from=2000-01-01T00:00:00Z"
    wait_for(
        lambda: len(api.call("GET", since_2000).body["readings"]) == 1,
        what="the periodic purge",
    )


def test_no_verified_license_means_no_deletion(keys, license_file, start_api, settings):
    license_file.write_text("garbage")
    api = start_api()
    assert api.app.extensions["iotistic"].run_retention() is None


def metrics(url: str) -> tuple[str, dict[str, float]]:
    r = http("GET", url + "/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            assert s.labels["customer_id"] == CUSTOMER
            values[s.name] = s.value
    return r.text, values


def test_exporter_metrics_are_computed_from_the_database_at_scrape_time(api, settings, keys, license_file):
    exporter = Server(create_exporter(settings))
    try:
        _, before = metrics(exporter.url)
        assert before["iotistic_devices_registered"] == 0 and before["iotistic_readings_ingested_total"] == 0
        device = register(api)["username"]
        register(api)
        old = datetime.now(UTC) - timedelta(days=3)
        batch = [
            {
                "device_id": device,
                "temperature": 20 + i,
                "timestamp": (old + timedelta(seconds=i)).isoformat(),
            }
            for i in range(3)
        ]
        api.call("POST", "/api/sensor-data", batch)
        api.call("POST", "/api/sensor-data", batch)  # duplicates are not billed twice

        text, after = wait_for(
            lambda: (m := metrics(exporter.url)) and m[1]["iotistic_api_requests_total"] >= 4 and m,
            what="the API request counts to be flushed",
        )
        assert after["iotistic_devices_registered"] == 2
        assert after["iotistic_readings_ingested_total"] == 3
        assert after["iotistic_devices_active"] == 0  # 3-day-old readings are not recent activity
        assert after["iotistic_storage_used_bytes"] > 1_000_000
        assert after["iotistic_exporter_database_up"] == 1
        assert after["iotistic_license_info"] == 1 and 'state="valid"' in text and 'plan="starter"' in text
        assert 13 * 86400 < after["iotistic_license_remaining_seconds"] <= 14 * 86400

        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: apt-get install prometheus (scripts/setup does it)"
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", check
    finally:
        exporter.stop()


def test_exporter_reports_a_database_outage_instead_of_failing(settings):
    broken = settings.with_(database_url=settings.database_url.replace("/tenant_app_test", "/no_such_db"))
    exporter = Server(create_exporter(broken))
    try:
        _, values = metrics(exporter.url)
        assert values["iotistic_exporter_database_up"] == 0
        assert "iotistic_devices_registered" not in values
    finally:
        exporter.stop()
