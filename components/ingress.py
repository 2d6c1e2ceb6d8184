"""The instance's public entry: https://{id}.{domain}, TLS from cert-manager, one route per service.

`/mqtt` carries MQTT over secure websockets to Mosquitto's 9001 listener, so devices outside the
cluster connect to `wss://{id}.{domain}/mqtt` with TLS ended here: no extra LoadBalancer.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.apps import API_PORT, DASHBOARD_PORT, EXPORTER_PORT
from components.args import Networking
from components.mosquitto import WEBSOCKET_PORT
from tenant_app.config import MQTT_WEBSOCKET_PATH

# Path → (service, port). Longest prefix wins in ingress-nginx, so "/" is the dashboard's fallback.
ROUTES = {
    "/": ("dashboard", DASHBOARD_PORT),
    "/api": ("api", API_PORT),
    "/metrics": ("billing-exporter", EXPORTER_PORT),
    MQTT_WEBSOCKET_PATH: ("mosquitto", WEBSOCKET_PORT),
}
ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/ssl-redirect": "true",
    # Device connections are long-lived: nginx's 60 s default would cut an idle websocket between
    # keepalives (devices ping every 30 s; allow an hour of silence).
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
    # The API's own limit is MAX_BODY_BYTES (1 MiB): let it answer 413 as JSON, not nginx as HTML.
    "nginx.ingress.kubernetes.io/proxy-body-size": "2m",
}


def ingress(
    namespace: pulumi.Input[str],
    customer_id: str,
    host: str,
    networking: Networking,
    opts: pulumi.ResourceOptions,
) -> k8s.networking.v1.Ingress:
    return k8s.networking.v1.Ingress(
        "ingress",
        metadata={
            "name": "instance",
            "namespace": namespace,
            "labels": {"customer-id": customer_id, "managed-by": "iotistic"},
            "annotations": {"cert-manager.io/cluster-issuer": networking.cluster_issuer, **ANNOTATIONS},
        },
        spec={
            "ingressClassName": networking.ingress_class,
            "tls": [{"hosts": [host], "secretName": f"{customer_id}-tls"}],
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": path,
                                "pathType": "Prefix",
                                "backend": {"service": {"name": svc, "port": {"number": port}}},
                            }
                            for path, (svc, port) in ROUTES.items()
                        ]
                    },
                }
            ],
        },
        opts=opts,
    )
