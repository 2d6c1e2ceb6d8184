"""The customer's namespace: its labels say who owns it and which pod security it enforces."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.labels import CUSTOMER_LABEL, DEFAULT_ENVIRONMENT, ENVIRONMENT_LABEL, PLAN_LABEL
from components.workload import MANAGED_BY

# Pod Security admission: reject any pod that is not "restricted", and say so in warnings/audit too.
POD_SECURITY_LABELS = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")
}


def namespace_labels(customer_id: str, plan: str, environment: str = DEFAULT_ENVIRONMENT) -> dict[str, str]:
    return {
        CUSTOMER_LABEL: customer_id,
        **MANAGED_BY,
        PLAN_LABEL: plan,
        ENVIRONMENT_LABEL: environment,
        **POD_SECURITY_LABELS,
    }


def customer_namespace(
    name: str,
    customer_id: str,
    plan: str,
    opts: pulumi.ResourceOptions,
    environment: str = DEFAULT_ENVIRONMENT,
):
    return k8s.core.v1.Namespace(
        "namespace",
        metadata={"name": name, "labels": namespace_labels(customer_id, plan, environment)},
        opts=opts,
    )
