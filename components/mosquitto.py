"""The customer's MQTT broker: Mosquitto 2, MQTT 1883 and websockets 9001, no anonymous access.

Every account is a dynamic-security client (see components/broker_auth.py): the admin the API
uses, the consumer's, and one per device created at run time by the API, each bound to its own
client id. Devices outside the cluster reach the websockets listener through the instance's
Ingress (`wss://{id}.{domain}/mqtt`, components/ingress.py).
"""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_kubernetes as k8s

from components.broker_auth import SECRET_NAME as AUTH_SECRET
from components.workload import Resources, deployment_with_service, tcp_probe
from components.workload import container as container_spec
from tenant_app.config import MQTT_MAX_PAYLOAD_BYTES

APP = "mosquitto"
MQTT_PORT = 1883
WEBSOCKET_PORT = 9001
MOSQUITTO_UID = 1883  # the mosquitto user of the eclipse-mosquitto image
RESOURCES = Resources(cpu_request="50m", cpu_limit="200m", memory_request="64Mi", memory_limit="256Mi")
INIT_RESOURCES = Resources(cpu_request="10m", cpu_limit="50m", memory_request="16Mi", memory_limit="32Mi")
DATA_SIZE = "1Gi"
DYNSEC_FILE = "/mosquitto/data/dynamic-security.json"

MOSQUITTO_CONF = f"""\
# Managed by Iotistic (components/mosquitto.py): edits are overwritten by the next `pulumi up`.
per_listener_settings false
allow_anonymous false
plugin /usr/lib/mosquitto_dynamic_security.so
plugin_opt_config_file {DYNSEC_FILE}
persistence true
persistence_location /mosquitto/data/
autosave_interval 60
# The ingestion consumer's persistent session must survive its restarts without dropping QoS 1
# readings: the default of 1000 queued messages is far below a minute of 1000 devices.
max_queued_messages 200000
max_queued_bytes 67108864
# A reading is ~150 bytes. A publish over 16 KiB closes its sender's connection (Mosquitto 2.0) and
# is never delivered; a packet over 64 KiB is refused before the broker buffers all of it.
message_size_limit {MQTT_MAX_PAYLOAD_BYTES}
max_packet_size 65536
log_dest stdout
listener {MQTT_PORT}
listener {WEBSOCKET_PORT}
protocol websockets
"""


def mosquitto(
    namespace: pulumi.Input[str],
    customer_id: str,
    image: str,
    storage_class: str | None,
    auth_checksum: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> tuple[
    k8s.core.v1.ConfigMap, k8s.core.v1.PersistentVolumeClaim, k8s.apps.v1.Deployment, k8s.core.v1.Service
]:
    config = k8s.core.v1.ConfigMap(
        "mosquitto-config",
        metadata={"name": "mosquitto-config", "namespace": namespace},
        data={"mosquitto.conf": MOSQUITTO_CONF},
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
    mounts = [
        {"name": "config", "mountPath": "/mosquitto/config", "readOnly": True},
        {"name": "auth", "mountPath": "/mosquitto/auth", "readOnly": True},
        {"name": "data", "mountPath": "/mosquitto/data"},
    ]
    main = container_spec(
        APP, image, ports, RESOURCES, tcp_probe(MQTT_PORT), volume_mounts=mounts, run_as_user=MOSQUITTO_UID
    )
    # The plugin rewrites its file as devices come and go, so it lives on the volume; the Secret
    # only seeds it once (the admin account), and later runs keep the devices already created.
    seed = container_spec(
        "seed-dynamic-security",
        image,
        {},
        INIT_RESOURCES,
        None,
        volume_mounts=mounts,
        run_as_user=MOSQUITTO_UID,
        command=[
            "sh",
            "-c",
            f"[ -f {DYNSEC_FILE} ] || cp /mosquitto/auth/dynamic-security.json {DYNSEC_FILE}",
        ],
    )
    conf_checksum = hashlib.sha256(MOSQUITTO_CONF.encode()).hexdigest()
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
                "secret": {
                    "secretName": AUTH_SECRET,
                    "items": [{"key": "dynamic-security.json", "path": "dynamic-security.json"}],
                },
            },
            {"name": "data", "persistentVolumeClaim": {"claimName": "mosquitto-data"}},
        ],
        annotations={"checksum/config": conf_checksum, "checksum/auth": auth_checksum},
        # One pod owns the RWO volume: the old one stops before the new one starts.
        strategy={"type": "Recreate"},
        fs_group=MOSQUITTO_UID,
        init_containers=[seed],
    )
    return config, data, deployment, svc
