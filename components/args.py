"""Typed inputs of a customer instance: what differs between customers and between clusters."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi


@dataclass(frozen=True)
class Images:
    """Where the instance's images come from; tags are pinned per customer when needed."""

    registry: str = "docker.io"
    api_tag: str = "latest"
    dashboard_tag: str = "latest"
    exporter_tag: str = "latest"
    postgres: str = "postgres:15-alpine"
    mosquitto: str = "eclipse-mosquitto:2.0"

    def iotistic(self, name: str, tag: str) -> str:
        return f"{self.registry}/iotistic/{name}:{tag}"


@dataclass(frozen=True)
class Storage:
    """Persistent volumes: the class and the size of the Postgres volume (10Gi, as the seed says)."""

    storage_class: str | None = None
    postgres_size: str = "10Gi"


@dataclass(frozen=True)
class Networking:
    """Cluster-specific routing and isolation settings."""

    base_domain: str = "iotistic.cloud"
    ingress_class: str = "nginx"
    cluster_issuer: str = "letsencrypt-prod"
    # Pods of the ingress controller's namespace may reach the instance; nothing else outside it.
    ingress_namespace_labels: dict[str, str] = field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "ingress-nginx"}
    )
    # Egress on 80/443 is allowed outside the cluster only: these ranges (pods, services) are excluded.
    cluster_cidrs: tuple[str, ...] = ("10.0.0.0/8",)


@dataclass(frozen=True)
class Placement:
    """Which nodes run the instance's pods (components/placement.py).

    `any`: wherever the scheduler likes, which on the local cluster means its simulated nodes;
    `real`: the local cluster's one real node, with the images built on this machine.
    """

    node: str = "any"

    NODES = ("any", "real")

    @property
    def real(self) -> bool:
        return self.node == "real"


@dataclass(frozen=True)
class CustomerInstanceArgs:
    """Everything one customer instance needs. `license_key` must be a Pulumi secret."""

    customer_id: str
    email: str
    company_name: str
    license_key: pulumi.Input[str]
    plan: str = "starter"
    images: Images = field(default_factory=Images)
    storage: Storage = field(default_factory=Storage)
    networking: Networking = field(default_factory=Networking)
    # Unpaid: every workload scaled to zero; the namespace, Secrets, volumes and data stay.
    suspended: bool = False
    placement: Placement = field(default_factory=Placement)
    # The platform's license public key (PEM). When set, the instance verifies its license with it
    # instead of fetching the billing service's key set: for clusters that cannot reach billing.
    license_public_key: str | None = None
    # "production" turns advisory policies (image tags) mandatory; see components/namespace.py.
    environment: str = "development"
    # The explicit override that lets a change replace or delete stateful resources (components/stateful.py).
    allow_stateful_replacement: bool = False

    @property
    def namespace(self) -> str:
        return f"customer-{self.customer_id}"

    @property
    def host(self) -> str:
        return f"{self.customer_id}.{self.networking.base_domain}"
