"""Where an instance's pods run: on the simulated (kwok) nodes, or on the local cluster's real node.

The real node (devenv/node.py) is labelled `iotistic.io/node=real` and tainted
`iotistic.io/real-node:NoSchedule`, so nothing lands there by accident and every other customer
stays on the simulated nodes. An instance placed on it gets that node selector and toleration on
every pod, and `imagePullPolicy: Never` on every container: its images are the ones built on this
machine (`python -m devenv images build`, LOCAL_IMAGES), never pulled from a registry. The
placement is a transformation of the instance's pod templates, so the workload modules stay
unaware of it and an instance not placed there is declared exactly as before.
"""

from __future__ import annotations

import copy

import pulumi

from components.args import Images, Placement

REAL_NODE_LABEL = "iotistic.io/node"
REAL_NODE_VALUE = "real"
REAL_NODE_TAINT = "iotistic.io/real-node"

# The images `python -m devenv images build` makes (toolchain/images/images.yaml names the same).
LOCAL_IMAGES = Images(
    registry="iotistic.local",
    api_tag="local",
    dashboard_tag="local",
    exporter_tag="local",
    postgres="iotistic.local/postgres:15",
    mosquitto="iotistic.local/mosquitto:2",
)
# local-path-provisioner on the real node: volumes are real folders on this machine.
LOCAL_STORAGE_CLASS = "local-path"

WORKLOAD_TYPES = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")


def place_pod_spec(pod_spec: dict) -> dict:
    """A copy of `pod_spec` that runs on the real node with the locally built images."""
    spec = copy.copy(pod_spec)
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), REAL_NODE_LABEL: REAL_NODE_VALUE}
    toleration = {"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}
    spec["tolerations"] = [*(spec.get("tolerations") or []), toleration]
    for key in ("containers", "initContainers"):
        if spec.get(key):
            spec[key] = [{**c, "imagePullPolicy": "Never"} for c in spec[key]]
    return spec


def on_real_node(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """The transformation: every Deployment and StatefulSet of the instance goes to the real node."""
    spec = args.props.get("spec")
    if args.type_ not in WORKLOAD_TYPES or not isinstance(spec, dict):
        return None
    template = spec["template"]
    placed = {**spec, "template": {**template, "spec": place_pod_spec(template["spec"])}}
    return pulumi.ResourceTransformationResult(props={**args.props, "spec": placed}, opts=args.opts)


def placed(opts: pulumi.ResourceOptions, placement: Placement) -> pulumi.ResourceOptions:
    """`opts` of a component, with the transformation when it is placed on the real node."""
    if not placement.real:
        return opts
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[on_real_node]))
