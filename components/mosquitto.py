"""The customer's MQTT broker: Mosquitto 2 with password and ACL files, MQTT 1883 and websockets 9001."""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_kubernetes as k8s

from components.secrets import MQTT_SECRET_NAME
from components.workload import Resources, deployment_with_service, tcp_probe
from components.workload import container as container_spec

APP = "mosquitto"
MQTT_PORT = 1883
WEBSOCKET_PORT = 9001
MOSQUITTO_UID = 1883  # the mosquitto user of the eclipse-mosquitto image
RESOURCES = Resources(cpu_request="50m", cpu_limit="200m", memory_request="64Mi", memory_limit="128Mi")
DATA_SIZE = "1Gi"

MOSQUITTO_CONF = f"""\
# Managed by Iotistic (components/mosquitto.py): edits are overwritten by the next `pulumi up`.
per_listener_settings false
allow_anonymous false
password_file /mosquitto/auth/passwd
acl_file /mosquitto/config/acl
persistence true
persistence_location /mosquitto/data/
autosave_interval 60
log_dest stdout
listener {MQTT_PORT}
listener {WEBSOCKET_PORT}
protocol websockets
"""

# The instance's services read all telemetry; a device may publish only under its own name.
ACL = """\
user api
topic read sensor/#
user dashboard
topic read sensor/#
pattern write sensor/%u/#
"""


def mosquitto(
    namespace: pulumi.Input[str],
    customer_id: str,
    image: str,
    storage_class: str | None,
    opts: pulumi.ResourceOptions,
) -> tuple[
    k8s.core.v1.ConfigMap, k8s.core.v1.PersistentVolumeClaim, k8s.apps.v1.Deployment, k8s.core.v1.Service
]:
    config = k8s.core.v1.ConfigMap(
        "mosquitto-config",
        metadata={"name": "mosquitto-config", "namespace": namespace},
        data={"mosquitto.conf": MOSQUITTO_CONF, "acl": ACL},
        opts=opts,
    )
    claim_spec: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": DATA_SIZE}}}
    if storage_class:
        claim_spec["storageClassName"] = storage_class
    data = k8s.core.v1.PersistentVolumeClaim(
        "mosquitto-data",
        metadata={"name": "mosquitto-data", "namespace": namespace},
        spec=claim_spec,
        opts=opts,
    )
    ports = {"mqtt": MQTT_PORT, "websockets": WEBSOCKET_PORT}
    main = container_spec(
        APP,
        image,
        ports,
        RESOURCES,
        tcp_probe(MQTT_PORT),
        volume_mounts=[
            {"name": "config", "mountPath": "/mosquitto/config", "readOnly": True},
            {"name": "auth", "mountPath": "/mosquitto/auth", "readOnly": True},
            {"name": "data", "mountPath": "/mosquitto/data"},
        ],
        run_as_user=MOSQUITTO_UID,
    )
    checksum = hashlib.sha256((MOSQUITTO_CONF + ACL).encode()).hexdigest()
    deployment, svc = deployment_with_service(
        APP,
        namespace,
        customer_id,
        main,
        pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[config, data])),
        service_ports=ports,
        volumes=[
            {"name": "config", "configMap": {"name": "mosquitto-config"}},
            {
                "name": "auth",
                "secret": {"secretName": MQTT_SECRET_NAME, "items": [{"key": "passwd", "path": "passwd"}]},
            },
            {"name": "data", "persistentVolumeClaim": {"claimName": "mosquitto-data"}},
        ],
        annotations={"checksum/config": checksum},
        # One pod owns the RWO volume: the old one stops before the new one starts.
        strategy={"type": "Recreate"},
        fs_group=MOSQUITTO_UID,
    )
    return config, data, deployment, svc
