"""Outputs that exist only once a component is fully deployed.

The reconcile command decides "unchanged" from the stack's checkpoint alone (automation/
bookkeeping.py): the fingerprint the program exports must therefore mean "this exact input was
deployed, completely". A plain exported value does not: the program registers its outputs as soon
as it has run, so an update in which one resource failed (a Service refused by the API server)
still recorded the new fingerprint, and the next reconcile counted that broken stack as unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pulumi

T = TypeVar("T")


def _custom_descendants(resource: pulumi.Resource) -> Iterator[pulumi.CustomResource]:
    # The SDK records every child in `_childResources`: the same set it expands
    # `depends_on=[component]` to, so nothing declared under the component is missed.
    for child in resource._childResources:  # noqa: SLF001
        if isinstance(child, pulumi.CustomResource):
            yield child
        yield from _custom_descendants(child)


def once_deployed(component: pulumi.ComponentResource, value: T) -> pulumi.Output[T]:
    """`value`, resolved only after every resource under `component` was created or updated.

    Each custom resource's `id` resolves when the engine has finished its step, and fails with
    the step: if any resource fails, this output never resolves, so the stack keeps the value
    of its last complete deployment (none for a first deployment).
    """
    ids = [r.id for r in _custom_descendants(component)]
    return pulumi.Output.all(*ids).apply(lambda _: value)
