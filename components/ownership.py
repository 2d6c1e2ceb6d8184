"""Iotistic owns what it deploys: Pulumi wins server-side-apply conflicts on its objects.

Without this, an edit made behind Pulumi's back (`kubectl scale`, `kubectl edit`) takes ownership
of the edited fields and the next `pulumi up` fails with a field conflict instead of repairing it.
"""

from __future__ import annotations

import pulumi

PATCH_FORCE = {"pulumi.com/patchForce": "true"}


def force_ownership(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """A transform for components: annotate every Kubernetes object so `up` reclaims drifted fields."""
    metadata = args.props.get("metadata")
    if not args.type_.startswith("kubernetes:") or not isinstance(metadata, dict):
        return None
    annotations = {**(metadata.get("annotations") or {}), **PATCH_FORCE}
    return pulumi.ResourceTransformationResult(
        props={**args.props, "metadata": {**metadata, "annotations": annotations}}, opts=args.opts
    )


def owned(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """`opts` plus the ownership transform, for a component's own constructor.

    An in-process transformation (not a `transforms` callback): it also runs under unit-test mocks.
    """
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[force_ownership]))
