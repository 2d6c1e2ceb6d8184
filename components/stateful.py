"""Stateful resources are protected: the engine refuses to replace or delete them.

A customer's namespace (deleting it deletes everything in it), a StatefulSet with volume claim
templates (Postgres: its claims are immutable, so a changed size means a replacement) and a
PersistentVolumeClaim (Mosquitto's data) hold data that a replacement would lose. They get
`protect=True`, so every path (`pulumi preview/up` from the root, reconcile, the signup worker,
the preview command) stops before touching them. An explicit override (stack config
`iotistic:allowStatefulReplacement: true`) lifts the protection and marks each such resource with
ALLOW_REPLACEMENT, which the policy pack's `stateful-resources-protected` rule accepts instead.
Destroying a stack (offboarding, `reconcile --destroy-removed`) unprotects it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

ALLOW_REPLACEMENT = "iotistic.io/allow-stateful-replacement"
NAMESPACE = "kubernetes:core/v1:Namespace"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"


def is_stateful(type_: str, props: Mapping[str, Any]) -> bool:
    """True for the kinds of resource whose replacement or deletion loses data."""
    if type_ in (NAMESPACE, PVC):
        return True
    spec = props.get("spec")
    return type_ == STATEFULSET and isinstance(spec, Mapping) and bool(spec.get("volumeClaimTemplates"))


def _protect(allow_replacement: bool):
    def transform(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
        if not is_stateful(args.type_, args.props):
            return None
        if not allow_replacement:
            opts = pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(protect=True))
            return pulumi.ResourceTransformationResult(props=args.props, opts=opts)
        metadata = dict(args.props.get("metadata") or {})
        metadata["annotations"] = {**(metadata.get("annotations") or {}), ALLOW_REPLACEMENT: "true"}
        return pulumi.ResourceTransformationResult(props={**args.props, "metadata": metadata}, opts=args.opts)

    return transform


def protected(opts: pulumi.ResourceOptions | None, allow_replacement: bool = False) -> pulumi.ResourceOptions:
    """`opts` plus the transformation that protects (or, overridden, marks) stateful children."""
    return pulumi.ResourceOptions.merge(
        opts, pulumi.ResourceOptions(transformations=[_protect(allow_replacement)])
    )
