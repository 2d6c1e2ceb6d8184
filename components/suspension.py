"""Suspension: an unpaid instance keeps its namespace, Secrets, volumes and data, and runs nothing.

A transformation rather than a `replicas` argument threaded through every workload: suspension is
one decision about the whole instance, and a workload added later is covered without a change.
"""

from __future__ import annotations

import pulumi

WORKLOAD_TYPES = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")


def scale_to_zero(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Set `spec.replicas` to 0 on every Deployment and StatefulSet of the component."""
    spec = args.props.get("spec")
    if args.type_ not in WORKLOAD_TYPES or not isinstance(spec, dict):
        return None
    return pulumi.ResourceTransformationResult(
        props={**args.props, "spec": {**spec, "replicas": 0}}, opts=args.opts
    )


def suspended(opts: pulumi.ResourceOptions | None, is_suspended: bool) -> pulumi.ResourceOptions | None:
    """`opts`, plus the scale-to-zero transformation when the instance is suspended."""
    if not is_suspended:
        return opts
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[scale_to_zero]))
