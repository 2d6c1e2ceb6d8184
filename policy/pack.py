"""The Iotistic policy pack: each rule of policy/rules.py as a pulumi-policy Policy.

Mandatory policies stop a preview and an up; advisory ones are reported only. `image-tags` is
advisory and `image-tags-production` mandatory: the same rule, enforced in production stacks
(stack config `iotistic:environment: production`, seen as the namespaces' environment label).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy import rules

PACK_NAME = "iotistic"


def plain(props: Any) -> Mapping[str, Any]:
    """The inputs without pulumi-policy's unknown-checking proxy (the rules handle unknowns)."""
    try:
        return props["__target"]
    except (KeyError, TypeError):
        return props


def resource(r: PolicyResource) -> rules.Resource:
    return rules.Resource(r.resource_type, r.name, plain(r.props), r.urn, r.opts.parent, bool(r.opts.protect))


def _per_resource(rule: Callable[[str, Mapping[str, Any]], list[str]]):
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        for message in rule(args.resource_type, plain(args.props)):
            report(message, None)

    return validate


def _per_stack(rule: Callable[[list[rules.Resource]], list[tuple[str, str]]], production: bool | None = None):
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [resource(r) for r in args.resources]
        if production is not None and rules.is_production(resources) != production:
            args.not_applicable("production stacks only" if production else "non-production stacks only")
        for urn, message in rule(resources):
            report(message, urn or None)

    return validate


MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY
POLICIES = [
    StackValidationPolicy(
        name="customer-namespace-guardrails",
        description="Each customer namespace has a ResourceQuota, a LimitRange and a default-deny "
        "NetworkPolicy.",
        validate=_per_stack(rules.namespace_guardrail_problems),
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="container-resources-and-security",
        description="Every container has CPU and memory requests and limits, runs as non-root and cannot "
        "escalate privileges.",
        validate=_per_resource(rules.container_problems),
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-external-services",
        description="No Service of type LoadBalancer or NodePort in a customer namespace.",
        validate=_per_resource(rules.service_problems),
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-credentials-in-config",
        description="No credential in a ConfigMap or a literal env value: secrets come from Secrets.",
        validate=_per_resource(rules.credential_problems),
        enforcement_level=MANDATORY,
    ),
    StackValidationPolicy(
        name="postgres-volume-size",
        description="The Postgres volume is not smaller than the plan's size (licensing/plans.py).",
        validate=_per_stack(rules.postgres_volume_problems),
        enforcement_level=MANDATORY,
    ),
    StackValidationPolicy(
        name="image-tags",
        description="Images carry an explicit version tag, not 'latest' (advisory outside production).",
        validate=_per_stack(rules.image_tag_problems, production=False),
        enforcement_level=ADVISORY,
    ),
    StackValidationPolicy(
        name="image-tags-production",
        description="In production stacks every image carries an explicit version tag, not 'latest'.",
        validate=_per_stack(rules.image_tag_problems, production=True),
        enforcement_level=MANDATORY,
    ),
    StackValidationPolicy(
        name="stateful-resources-protected",
        description="Namespaces, StatefulSets with volumes and PVCs are protected from replacement and "
        "deletion unless the stack sets iotistic:allowStatefulReplacement.",
        validate=_per_stack(rules.stateful_protection_problems),
        enforcement_level=MANDATORY,
    ),
]
