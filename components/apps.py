"""The instance's own services: API (3001), dashboard (80) and billing exporter (9090).

Sizes and ports are the seed's; everything else about their shape comes from components.workload.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.broker_auth import ADMIN_USER, INGEST_USER
from components.broker_auth import SECRET_NAME as MQTT_SECRET_NAME
from components.mosquitto import MQTT_PORT
from components.secrets import SECRET_NAME
from components.workload import Resources, deployment_with_service, http_probe
from components.workload import container as container_spec

API_PORT = 3001
DASHBOARD_PORT = 80
DASHBOARD_CONTAINER_PORT = 8080  # non-root containers cannot bind 80; the Service maps 80 to it
EXPORTER_PORT = 9090
LICENSE_MOUNT = "/etc/iotistic/license"

API = Resources(cpu_request="250m", cpu_limit="500m", memory_request="256Mi", memory_limit="512Mi")
# The MQTT consumer runs CONSUMER_PROCESSES processes sharing the telemetry subscription (each its
# own broker account and client id). Its limit leaves the quota room for a rolling update of the API pod.
CONSUMER_PROCESSES = 2
CONSUMER = Resources(cpu_request="100m", cpu_limit="500m", memory_request="128Mi", memory_limit="256Mi")
PROVISION = Resources(cpu_request="50m", cpu_limit="250m", memory_request="64Mi", memory_limit="128Mi")
DASHBOARD = Resources(cpu_request="100m", cpu_limit="200m", memory_request="128Mi", memory_limit="256Mi")
EXPORTER = Resources(cpu_request="50m", cpu_limit="100m", memory_request="64Mi", memory_limit="128Mi")
APP_UID = 10001


def _from_secret(name: str, key: str, secret: str = SECRET_NAME) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _value(name: str, value: pulumi.Input[str]) -> dict:
    return {"name": name, "value": value}


@dataclass(frozen=True)
class AppsSettings:
    """What the three services need to know about the world around the instance."""

    customer_id: str
    license_jwks_url: str
    billing_url: str
    mqtt_public_host: str
    mqtt_websocket_url: str  # wss://{id}.{domain}/mqtt: how devices outside the cluster connect
    license_public_key: str | None = None  # pinned instead of fetching license_jwks_url


def _license_key_env(settings: AppsSettings) -> list[dict]:
    """The pinned license public key, when the instance has one (it wins over the JWKS URL)."""
    return [_value("LICENSE_PUBLIC_KEY", settings.license_public_key)] if settings.license_public_key else []


def api(
    namespace: pulumi.Input[str],
    settings: AppsSettings,
    image: str,
    secrets_checksum: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service]:
    """The API pod: the REST service, the MQTT ingestion consumer beside it, and a set-up step."""
    env = [
        _from_secret("IOTISTIC_LICENSE_KEY", "IOTISTIC_LICENSE_KEY"),
        # The mounted copy is re-read when the Secret changes, so a renewed license needs no restart.
        _value("IOTISTIC_LICENSE_KEY_FILE", f"{LICENSE_MOUNT}/IOTISTIC_LICENSE_KEY"),
        _value("LICENSE_JWKS_URL", settings.license_jwks_url),
        _from_secret("DATABASE_URL", "DATABASE_URL"),
        _from_secret("CUSTOMER_ID", "CUSTOMER_ID"),
        _value("MQTT_BROKER", f"mqtt://mosquitto:{MQTT_PORT}"),
        _value("MQTT_PUBLIC_HOST", settings.mqtt_public_host),
        _value("MQTT_WEBSOCKET_URL", settings.mqtt_websocket_url),
        # The admin creates device accounts and ACLs; the ingest account is the consumer's own.
        _value("MQTT_ADMIN_USERNAME", ADMIN_USER),
        _from_secret("MQTT_ADMIN_PASSWORD", "ADMIN_MQTT_PASSWORD", MQTT_SECRET_NAME),
        _value("MQTT_USERNAME", INGEST_USER),
        _from_secret("MQTT_PASSWORD", "INGEST_MQTT_PASSWORD", MQTT_SECRET_NAME),
        # The consumer's processes, and the broker accounts the provision step creates for them.
        _value("CONSUMER_PROCESSES", str(CONSUMER_PROCESSES)),
        _value("API_PORT", str(API_PORT)),
        *_license_key_env(settings),
    ]
    mounts = [{"name": "license", "mountPath": LICENSE_MOUNT, "readOnly": True}]
    main = container_spec(
        "api",
        image,
        {"http": API_PORT},
        API,
        http_probe("/health", "http"),
        env=env,
        volume_mounts=mounts,
        run_as_user=APP_UID,
    )
    consumer = container_spec(
        "consumer",
        image,
        {},
        CONSUMER,
        None,
        env=env,
        volume_mounts=mounts,
        run_as_user=APP_UID,
        command=["python", "-m", "tenant_app.consumer"],
    )
    provision = container_spec(
        "provision",
        image,
        {},
        PROVISION,
        None,
        env=env,
        run_as_user=APP_UID,
        command=["python", "-m", "tenant_app.provision"],
    )
    return deployment_with_service(
        "api",
        namespace,
        settings.customer_id,
        main,
        opts,
        service_ports={"http": API_PORT},
        volumes=[
            {
                "name": "license",
                "secret": {
                    "secretName": SECRET_NAME,
                    "items": [{"key": "IOTISTIC_LICENSE_KEY", "path": "IOTISTIC_LICENSE_KEY"}],
                },
            }
        ],
        annotations={"checksum/secrets": secrets_checksum},
        sidecars=[consumer],
        init_containers=[provision],
    )


def dashboard(
    namespace: pulumi.Input[str], settings: AppsSettings, image: str, opts: pulumi.ResourceOptions
) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service]:
    # Sign-in goes through the billing login; the key set verifies the admin token for upgrades.
    env = [
        _value("API_URL", f"http://api:{API_PORT}"),
        _value("BILLING_URL", settings.billing_url),
        _value("LICENSE_JWKS_URL", settings.license_jwks_url),
        _from_secret("CUSTOMER_ID", "CUSTOMER_ID"),
        _value("DASHBOARD_PORT", str(DASHBOARD_CONTAINER_PORT)),
    ]
    main = container_spec(
        "dashboard",
        image,
        {"http": DASHBOARD_CONTAINER_PORT},
        DASHBOARD,
        http_probe("/", "http"),
        env=env,
        run_as_user=APP_UID,
    )
    deployment, svc = deployment_with_service(
        "dashboard", namespace, settings.customer_id, main, opts, service_ports={"http": DASHBOARD_PORT}
    )
    return deployment, svc


def exporter(
    namespace: pulumi.Input[str], settings: AppsSettings, image: str, opts: pulumi.ResourceOptions
) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service]:
    env = [
        _from_secret("CUSTOMER_ID", "CUSTOMER_ID"),
        _from_secret("DATABASE_URL", "DATABASE_URL"),
        _from_secret("IOTISTIC_LICENSE_KEY", "IOTISTIC_LICENSE_KEY"),
        _value("EXPORTER_PORT", str(EXPORTER_PORT)),
        *_license_key_env(settings),
    ]
    main = container_spec(
        "billing-exporter",
        image,
        {"metrics": EXPORTER_PORT},
        EXPORTER,
        http_probe("/metrics", "metrics"),
        env=env,
        run_as_user=APP_UID,
    )
    return deployment_with_service(
        "billing-exporter",
        namespace,
        settings.customer_id,
        main,
        opts,
        service_ports={"metrics": EXPORTER_PORT},
    )
