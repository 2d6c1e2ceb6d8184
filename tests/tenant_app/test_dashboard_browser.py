"""The dashboard in headless Chromium: sign-in through billing, devices, charts, alerts, plan, upgrade."""

from __future__ import annotations

import base64
import json
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
from tests.tenant_app.conftest import CUSTOMER
from tests.tenant_app.helpers import Server, http
from tests.tenant_app.test_ingestion import register

OWNER, PASSWORD = "owner@acme.example", "correct horse battery staple"

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
def billing(keys):
    """A stand-in for the billing service: login (issuing real access tokens with the test key)
    and checkout. The real ones come with the billing issue and answer the same shapes."""
    app = Flask(__name__)
    app.config["requests"] = []

    @app.post("/api/customers/login")
    def login():
        body = request.get_json()
        if body != {"email": OWNER, "password": PASSWORD}:
            return jsonify(error="wrong email or password"), 401
        token = keys.token(role="admin", subject=OWNER)
        return jsonify(access_token=token, token_type="Bearer", expires_in=900, customer_id=CUSTOMER)

    @app.post("/api/subscriptions/create-checkout-session")
    def checkout():
        app.config["requests"].append((request.headers.get("Authorization"), request.get_json()))
        return jsonify(checkoutUrl=request.host_url + "checkout/cs_test_123")

    app.get("/checkout/<session>")(lambda session: f"<h1 id='stripe'>Checkout {session}</h1>")
    server = Server(app)
    yield server
    server.stop()


def sign_in(browser, password: str) -> None:
    for field, value in (("email", OWNER), ("password", password)):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "signin-submit").click()


def test_dashboard_shows_devices_charts_alerts_and_license_and_upgrades(
    browser, billing, api, settings, keys, license_file
):
    license_file.write_text(keys.license(plan="professional", days=9.5, trial=True))
    devices = [register(api)["username"] for _ in range(2)]
    api.call(
        "POST",
        "/api/alerts/rules",
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
    assert api.call("POST", "/api/sensor-data", readings).status == 201
    dashboard = Server(create_dashboard(settings.with_(api_url=api.url, billing_url=billing.url)))
    try:
        browser.get(dashboard.url + "/")
        wait = WebDriverWait(browser, 15)
        body = browser.find_element(By.TAG_NAME, "body")
        # Signed out: the sign-in form, no data.
        wait.until(lambda d: body.get_attribute("data-signed-in") == "false")
        assert browser.find_element(By.ID, "signin").is_displayed()
        assert not browser.find_element(By.ID, "content").is_displayed()
        sign_in(browser, "wrong password")
        wait.until(lambda d: d.find_element(By.ID, "signin-error").text)
        assert "wrong email or password" in browser.find_element(By.ID, "signin-error").text
        sign_in(browser, PASSWORD)
        wait.until(lambda d: body.get_attribute("data-loaded") == "true")

        # The browser holds only the short-lived access token: no password, no API key, nothing
        # that outlives the tab.
        assert browser.execute_script("return window.localStorage.length") == 0
        stored = browser.execute_script(
            "return Object.fromEntries(Object.keys(sessionStorage).map(k => [k, sessionStorage.getItem(k)]))"
        )
        assert set(stored) == {"iotistic.accessToken", "iotistic.accessTokenExpires"}
        token = stored["iotistic.accessToken"]
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["aud"] == CUSTOMER and claims["exp"] - claims["iat"] <= 900
        assert PASSWORD not in json.dumps(stored) and "iotk_" not in json.dumps(stored)

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
        authorization, request_body = billing.app.config["requests"][0]
        assert request_body["customer_id"] == "acme" and request_body["plan"] == "professional"
        assert authorization == f"Bearer {token}"

        # An expired session sends the user back to the sign-in form, with the reason.
        browser.get(dashboard.url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true")
        browser.execute_script("sessionStorage.setItem('iotistic.accessToken', 'expired.or.forged')")
        browser.execute_script("document.getElementById('ranges').querySelector('button').click()")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-signed-in") == "false")
        assert "sign in again" in browser.find_element(By.ID, "signin-error").text.lower()
    finally:
        dashboard.stop()


def test_sign_in_and_upgrade_errors_are_shown_not_swallowed(settings, api, keys, billing):
    dashboard = Server(create_dashboard(settings.with_(api_url=api.url, billing_url="http://127.0.0.1:9")))
    admin, reader = keys.token(role="admin"), keys.token(role="read")
    try:
        r = http("POST", dashboard.url + "/login", {"email": OWNER, "password": PASSWORD})
        assert r.status == 502 and "billing service is unreachable" in r.body["error"]
        r = http("POST", dashboard.url + "/upgrade", {"plan": "professional"}, token=admin)
        assert r.status == 502 and "billing service is unreachable" in r.body["error"]
        assert http("POST", dashboard.url + "/upgrade", {"plan": "gold"}, token=admin).status == 400
        assert http("POST", dashboard.url + "/upgrade", {"plan": "professional"}).status == 401
        assert http("POST", dashboard.url + "/upgrade", {"plan": "professional"}, token=reader).status == 403
        for bad in ({"email": OWNER}, {"email": "x" * 1000, "password": "y"}, [1], None):
            assert http("POST", dashboard.url + "/login", bad).status == 400
        assert http("POST", dashboard.url + "/login", raw=b"[" * 50_000).status == 400  # deep nesting
        assert http("POST", dashboard.url + "/login", raw=b" " * 100_000).status == 413
    finally:
        dashboard.stop()
    # A billing account of another customer cannot sign in to this instance.
    other = Server(
        create_dashboard(settings.with_(customer_id="globex", api_url=api.url, billing_url=billing.url))
    )
    try:
        r = http("POST", other.url + "/login", {"email": OWNER, "password": PASSWORD})
        assert r.status == 403 and "another Iotistic instance" in r.body["error"]
        assert (
            http("GET", other.url + "/").headers["Content-Security-Policy"].startswith("default-src 'self'")
        )
    finally:
        other.stop()
