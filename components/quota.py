"""Noisy-neighbour limits: a ResourceQuota per namespace and defaults for containers without resources."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

QUOTA = {
    "requests.cpu": "4",
    "limits.cpu": "4",
    "requests.memory": "4Gi",
    "limits.memory": "4Gi",
    "persistentvolumeclaims": "5",
    "services": "10",
}
# A container that states no resources gets these, so it is admitted under the quota and stays small.
CONTAINER_DEFAULTS = {
    "type": "Container",
    "default": {"cpu": "200m", "memory": "256Mi"},
    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
    "max": {"cpu": "2", "memory": "2Gi"},
}


def quota(namespace: pulumi.Input[str], opts: pulumi.ResourceOptions):
    resource_quota = k8s.core.v1.ResourceQuota(
        "quota", metadata={"name": "instance-quota", "namespace": namespace}, spec={"hard": QUOTA}, opts=opts
    )
    limit_range = k8s.core.v1.LimitRange(
        "limits",
        metadata={"name": "container-defaults", "namespace": namespace},
        spec={"limits": [CONTAINER_DEFAULTS]},
        opts=opts,
    )
    return resource_quota, limit_range
