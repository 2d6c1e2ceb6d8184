"""Isolation: deny by default; allow only the ingress controller, the namespace itself, DNS and the web."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.args import Networking

SAME_NAMESPACE = {"podSelector": {}}


def network_policies(namespace: pulumi.Input[str], networking: Networking, opts: pulumi.ResourceOptions):
    def policy(name: str, spec: dict) -> k8s.networking.v1.NetworkPolicy:
        return k8s.networking.v1.NetworkPolicy(
            name, metadata={"name": name, "namespace": namespace}, spec=spec, opts=opts
        )

    deny = policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    allow_ingress = policy(
        "allow-ingress",
        {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": dict(networking.ingress_namespace_labels)}},
                        SAME_NAMESPACE,
                    ]
                }
            ],
        },
    )
    allow_egress = policy(
        "allow-egress",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                {"to": [SAME_NAMESPACE]},
                # The web outside the cluster only: other customers' pods and services are excluded.
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(networking.cluster_cidrs)}}],
                    "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}],
                },
            ],
        },
    )
    return deny, allow_ingress, allow_egress
