"""Fixtures for the tenant app: real Postgres and Mosquitto (session), keys, licenses, servers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from devenv.mosquitto import ADMIN_USER
from licensing import sign_access_token, sign_license
from licensing.keys import generate_private_key_pem, public_key_pem
from tenant_app.config import Settings
from tenant_app.consumer import Consumer, end_session
from tenant_app.db import TABLES, ensure_schema
from tenant_app.dynsec import DynsecAdmin
from tests.tenant_app.helpers import Server

CUSTOMER = "acme"
KID = "billing-test-1"
CONSUMER_PASSWORD = "consumer-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Keys:
    private_pem: bytes
    public_pem: bytes
    public_file: Path
    attacker_private_pem: bytes

    def license(self, *, customer: str = CUSTOMER, plan: str = "starter", days: float = 14, **kw) -> str:
        """A genuine license signed by the test billing key."""
        now = kw.pop("issued_at", datetime.now(UTC))
        return sign_license(
            self.private_pem,
            kid=KID,
            customer_id=customer,
            plan=plan,
            issued_at=now - timedelta(minutes=1),
            expires_at=now + timedelta(days=days),
            **kw,
        )

    def token(self, *, role: str = "admin", customer: str = CUSTOMER, **kw) -> str:
        """An access token as the billing login issues it, signed by the test billing key."""
        kw.setdefault("subject", "owner@acme.example")
        return sign_access_token(self.private_pem, kid=KID, customer_id=customer, role=role, **kw)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Keys:
    private = generate_private_key_pem()
    public = public_key_pem(private)
    path = tmp_path_factory.mktemp("keys") / "license-public.pem"
    path.write_bytes(public)
    return Keys(private, public, path, generate_private_key_pem())


@pytest.fixture(scope="session")
def tenant_db_url(postgres) -> str:
    url = postgres.create_database("tenant_app_test")
    ensure_schema(url)
    return url


@pytest.fixture
def db(tenant_db_url) -> str:
    """The tenant database, emptied for this test."""
    with psycopg.connect(tenant_db_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    ensure_schema(tenant_db_url)  # puts the usage counter rows back
    return tenant_db_url


@pytest.fixture(scope="session")
def broker_admin(mosquitto) -> DynsecAdmin:
    return DynsecAdmin("127.0.0.1", mosquitto.port, ADMIN_USER, mosquitto.admin_password)


@pytest.fixture
def consumer_account(broker_admin, mosquitto) -> Iterator[tuple[str, str]]:
    """The consumer's account, bound to a client id of this test's own: (client id, password).

    Its session is deleted afterwards: left on the broker, it would stay a member of the shared
    subscription and take its share of the next tests' readings.
    """
    client_id = f"ingest-test-{uuid.uuid4().hex[:8]}"
    broker_admin.ensure_consumer("iotistic-ingest", CONSUMER_PASSWORD, client_id)
    yield client_id, CONSUMER_PASSWORD
    session = Settings(
        customer_id=CUSTOMER,
        mqtt_port=mosquitto.port,
        mqtt_username="iotistic-ingest",
        mqtt_password=CONSUMER_PASSWORD,
        consumer_client_id=client_id,
    )
    assert end_session(session), "could not end the test consumer's session"


@pytest.fixture
def license_file(tmp_path, keys) -> Path:
    path = tmp_path / "license" / "IOTISTIC_LICENSE_KEY"
    path.parent.mkdir()
    path.write_text(keys.license())
    return path


@pytest.fixture
def settings(db, mosquitto, keys, license_file, consumer_account) -> Settings:
    return Settings(
        customer_id=CUSTOMER,
        database_url=db,
        license_key_file=license_file,
        license_public_key_file=keys.public_file,
        license_recheck_seconds=0.0,
        mqtt_host="127.0.0.1",
        mqtt_port=mosquitto.port,
        mqtt_admin_username=ADMIN_USER,
        mqtt_admin_password=mosquitto.admin_password,
        mqtt_websocket_url=f"ws://127.0.0.1:{mosquitto.ws_port}/mqtt",
        mqtt_username="iotistic-ingest",
        mqtt_password=consumer_account[1],
        consumer_client_id=consumer_account[0],
        consumer_session_expiry_seconds=120,
        consumer_batch_ms=20,
        usage_flush_seconds=0.2,
    )


@pytest.fixture
def admin_token(keys) -> str:
    return keys.token(role="admin")


@pytest.fixture
def start_api(settings, keys, admin_token) -> Iterator[Callable[..., Server]]:
    """Start the API app for real (werkzeug server in a thread), signed in as an admin; stopped after.

    With a fixed `clock`, the admin's token is issued at that time (tokens are judged by it).
    """
    from tenant_app.api import create_app

    started: list[Server] = []

    def start(config: Settings | None = None, **kw) -> Server:
        token = keys.token(issued_at=kw["clock"]()) if "clock" in kw else admin_token
        server = Server(create_app(config or settings, **kw), token=token)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.app.extensions["iotistic"].close()


@pytest.fixture
def api(start_api) -> Server:
    return start_api()


@pytest.fixture
def start_consumer(settings) -> Iterator[Callable[..., Consumer]]:
    """Run the MQTT consumer in a thread; stopped after the test."""
    running: list[tuple[Consumer, threading.Thread]] = []

    def start(config: Settings | None = None, **kw) -> Consumer:
        consumer = Consumer(config or settings, **kw)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        assert consumer.connected.wait(10), "consumer did not connect to the broker"
        running.append((consumer, thread))
        return consumer

    yield start
    for consumer, thread in running:
        consumer.stop()
        thread.join(10)


def new_device_id() -> str:
    """Device ids are unique per test: broker accounts outlive the per-test database."""
    return f"dev-{uuid.uuid4().hex[:10]}"
