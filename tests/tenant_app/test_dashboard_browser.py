"""The dashboard in headless Chromium: devices, charts, alerts, plan and the upgrade button."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask, jsonify, request
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tenant_app.dashboard import create_app as create_dashboard
from tests.tenant_app.helpers import Server, http
from tests.tenant_app.test_ingestion import register

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def billing():
    """A stand-in for the billing service's checkout endpoint (the real one comes with the billing issue)."""
    app = Flask(__name__)
    app.config["requests"] = []

    @app.post("/api/subscriptions/create-checkout-session")
    def checkout():
        app.config["requests"].append(request.get_json())
        return jsonify(checkoutUrl=request.host_url + "checkout/cs_test_123")

    app.get("/checkout/<session>")(lambda session: f"<h1 id='stripe'>Checkout {session}</h1>")
    server = Server(app)
    yield server
    server.stop()


def test_dashboard_shows_devices_charts_alerts_and_license_and_upgrades(
    browser, billing, api, settings, keys, license_file
):
    license_file.write_text(keys.license(plan="professional", days=9.5, trial=True))
    devices = [register(api)["username"] for _ in range(2)]
    http(
        "POST",
        api.url + "/api/alerts/rules",
        {"metric": "temperature", "operator": ">", "threshold": 26, "name": "Greenhouse too hot"},
    )
    now = datetime.now(UTC)
    readings = [
        {
            "device_id": devices[0],
            "timestamp": (now - timedelta(seconds=10 * (60 - i))).isoformat(),
            "temperature": 22 + (i % 20) / 4,
            "humidity": 40 + i / 6,
            "pressure": 1010 + i / 20,
            "gas_resistance": 100000 + 500 * i,
        }
        for i in range(60)
    ]
    assert http("POST", api.url + "/api/sensor-data", readings).status == 201
    dashboard = Server(create_dashboard(settings.with_(api_url=api.url, billing_url=billing.url)))
    try:
        browser.get(dashboard.url + "/")
        wait = WebDriverWait(browser, 15)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")

        rows = browser.find_elements(By.CSS_SELECTOR, "#devices tbody tr[data-device]")
        assert sorted(r.get_attribute("data-device") for r in rows) == sorted(devices)
        assert browser.find_element(By.ID, "plan").text.lower() == "professional trial"
        assert browser.find_element(By.ID, "trial-days").text == "10 trial days left"
        assert browser.find_element(By.ID, "license-expiry").text.startswith("License expires")
        for metric in ("temperature", "humidity", "pressure", "gas_resistance"):
            path = browser.find_element(By.CSS_SELECTOR, f"#chart-{metric} path.line")
            assert path.get_attribute("data-points") == "60", metric
        alerts = browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
        assert "Greenhouse too hot" in alerts[0].text and devices[0] in alerts[0].text

        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        browser.find_element(By.ID, "upgrade").click()
        wait.until(lambda d: "/checkout/cs_test_123" in d.current_url)
        assert billing.app.config["requests"][0]["customer_id"] == "acme"
        assert billing.app.config["requests"][0]["plan"] == "professional"
    finally:
        dashboard.stop()


def test_upgrade_failure_is_shown_not_swallowed(settings, api):
    dashboard = Server(create_dashboard(settings.with_(api_url=api.url, billing_url="http://127.0.0.1:9")))
    try:
        r = http("POST", dashboard.url + "/upgrade", {"plan": "professional"})
        assert r.status == 502 and "billing service is unreachable" in r.body["error"]
        assert http("POST", dashboard.url + "/upgrade", {"plan": "gold"}).status == 400
    finally:
        dashboard.stop()
