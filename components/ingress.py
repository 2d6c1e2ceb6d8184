"""The instance's public entry: https://{id}.{domain}, TLS from cert-manager, one route per service."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.apps import API_PORT, DASHBOARD_PORT, EXPORTER_PORT
from components.args import Networking

# Path → (service, port). Longest prefix wins in ingress-nginx, so "/" is the dashboard's fallback.
ROUTES = {
    "/": ("dashboard", DASHBOARD_PORT),
    "/api": ("api", API_PORT),
    "/metrics": ("billing-exporter", EXPORTER_PORT),
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
            "annotations": {
                "cert-manager.io/cluster-issuer": networking.cluster_issuer,
                "nginx.ingress.kubernetes.io/ssl-redirect": "true",
            },
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
