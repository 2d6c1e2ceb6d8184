"""The guardrails as plain functions of resource types and inputs: no engine, no gRPC, unit-testable.

policy/pack.py wraps each function in a pulumi-policy Policy. A rule returns one message per
problem (a stack rule: `(urn, message)` pairs), each naming the object and what to change.
Values the engine cannot know during a preview (outputs of resources not created yet) are never
reported as problems: the same rule sees them known during `up`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from components.labels import CUSTOMER_LABEL, ENVIRONMENT_LABEL, PLAN_LABEL, PRODUCTION
from components.stateful import ALLOW_REPLACEMENT, NAMESPACE, PVC, STATEFULSET, is_stateful
from licensing.plans import PLANS

# The engine's placeholders for values unknown during a preview (pulumi_policy.proxy).
UNKNOWN = {
    "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
    "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
    "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
    "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
    "030794c1-ac77-496b-92df-f27374a8bd58",
    "e48ece36-62e2-4504-bad9-02848725956a",
    "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
}
SERVICE = "kubernetes:core/v1:Service"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
RESOURCE_QUOTA = "kubernetes:core/v1:ResourceQuota"
LIMIT_RANGE = "kubernetes:core/v1:LimitRange"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    STATEFULSET: ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
CUSTOMER_NAMESPACE_PREFIX = "customer-"
EXTERNAL_SERVICE_TYPES = ("LoadBalancer", "NodePort")


@dataclass(frozen=True)
class Resource:
    """What a stack rule sees of one resource: its type, inputs and options."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    parent: str | None = None
    protect: bool = False


# --- reading inputs ------------------------------------------------------------------------------
def known(value: Any) -> bool:
    return not (isinstance(value, str) and value in UNKNOWN)


def get(data: Any, *path: str) -> Any:
    """data[path[0]][path[1]]...; None when a step is missing, not a mapping, or unknown."""
    for key in path:
        if not isinstance(data, Mapping) or not known(data):
            return None
        data = data.get(key)
    return data if known(data) else None


def metadata_name(props: Mapping[str, Any]) -> str:
    return get(props, "metadata", "name") or "?"


def object_name(type_: str, props: Mapping[str, Any]) -> str:
    """`Kind namespace/name` as kubectl users read it."""
    kind = type_.rsplit(":", 1)[-1]
    ns = get(props, "metadata", "namespace")
    return f"{kind} {ns}/{metadata_name(props)}" if isinstance(ns, str) else f"{kind} {metadata_name(props)}"


def pod_spec(type_: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    path = POD_SPEC_PATHS.get(type_)
    spec = get(props, *path) if path else None
    return spec if isinstance(spec, Mapping) else None


def containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every container of a pod spec, init containers included."""
    found = []
    for key in ("initContainers", "containers"):
        for c in get(pod, key) or []:
            if isinstance(c, Mapping):
                found.append(c)
    return found


# --- every container: resources, non-root, no privilege escalation --------------------------------
def container_problems(type_: str, props: Mapping[str, Any]) -> list[str]:
    pod = pod_spec(type_, props)
    if pod is None:
        return []
    pod_security = get(pod, "securityContext") or {}
    problems = []
    for c in containers(pod):
        where = f"container {c.get('name', '?')!r} of {object_name(type_, props)}"
        resources = c.get("resources")
        if known(resources):
            missing = [
                f"{res} {kind[:-1]}"
                for kind in ("requests", "limits")
                for res in ("cpu", "memory")
                if get(resources, kind, res) is None and known(get(resources, kind))
            ]
            if missing:
                problems.append(f"{where} has no {', '.join(missing)}")
        security = c.get("securityContext") if isinstance(c.get("securityContext"), Mapping) else {}
        user = security.get("runAsUser", pod_security.get("runAsUser"))
        non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        if user == 0:
            problems.append(f"{where} runs as root (runAsUser: 0)")
        elif non_root is not True and known(non_root):
            problems.append(f"{where} may run as root: set securityContext.runAsNonRoot: true")
        escalation = security.get("allowPrivilegeEscalation")
        if escalation is not False and known(escalation):
            problems.append(f"{where} allows privilege escalation: set allowPrivilegeEscalation: false")
        if security.get("privileged") is True:
            problems.append(f"{where} is privileged")
    return problems


# --- no LoadBalancer or NodePort Service in a customer namespace ---------------------------------
def in_customer_namespace(props: Mapping[str, Any]) -> bool:
    ns = get(props, "metadata", "namespace")
    labels = get(props, "metadata", "labels") or {}
    return (isinstance(ns, str) and ns.startswith(CUSTOMER_NAMESPACE_PREFIX)) or CUSTOMER_LABEL in labels


def service_problems(type_: str, props: Mapping[str, Any]) -> list[str]:
    kind = get(props, "spec", "type")
    if type_ != SERVICE or kind not in EXTERNAL_SERVICE_TYPES or not in_customer_namespace(props):
        return []
    return [
        f"{object_name(type_, props)} is of type {kind}: customer instances are reached through "
        "their Ingress only (use ClusterIP)"
    ]


# --- no credential in a ConfigMap or a literal env value ------------------------------------------
_CREDENTIAL_WORDS = {
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "CREDENTIAL",
    "CREDENTIALS",
}
_CREDENTIAL_PAIRS = {
    ("API", "KEY"),
    ("PRIVATE", "KEY"),
    ("LICENSE", "KEY"),
    ("ACCESS", "KEY"),
    ("SIGNING", "KEY"),
}
# A name ending in one of these says where a credential is, or whose it is, not what it is.
_NOT_A_VALUE = {"FILE", "PATH", "DIR", "NAME", "USER", "USERNAME", "ID", "REF", "KEYREF"}
CREDENTIAL_VALUES = (
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a URL with a password", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)),
    ("a JSON Web Token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("a Stripe key", re.compile(r"\b[sr]k_(live|test)_[A-Za-z0-9]{8,}")),
    ("an AWS access key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    (
        "a password assignment",
        re.compile(r"(?im)^\s*[\w.-]*(password|passwd|secret|token|api_key)[\w.-]*\s*[=:]\s*\S+"),
    ),
)


def credential_name(name: str) -> bool:
    """True for names like DB_PASSWORD, apiKey, stripe-secret; not for PASSWORD_FILE or SECRET_NAME."""
    words = [w.upper() for w in re.split(r"[_\-.\s]+|(?<=[a-z])(?=[A-Z])", name) if w]
    if not words or words[-1] in _NOT_A_VALUE:
        return False
    return bool(_CREDENTIAL_WORDS & set(words)) or any(
        pair in _CREDENTIAL_PAIRS for pair in zip(words, words[1:], strict=False)
    )


def credential_value(value: Any) -> str | None:
    """What kind of credential `value` looks like, or None."""
    if not isinstance(value, str) or not known(value):
        return None
    for what, pattern in CREDENTIAL_VALUES:
        if pattern.search(value):
            return what
    return None


def credential_problems(type_: str, props: Mapping[str, Any]) -> list[str]:
    problems = []
    if type_ == CONFIGMAP:
        for key, value in (get(props, "data") or {}).items():
            what = "a credential" if credential_name(key) else credential_value(value)
            if what:
                problems.append(
                    f"{object_name(type_, props)} key {key!r} holds {what}: keep credentials in a Secret"
                )
    pod = pod_spec(type_, props)
    for c in containers(pod) if pod is not None else []:
        for env in c.get("env") or []:
            if not isinstance(env, Mapping) or "value" not in env:
                continue  # valueFrom: read from a Secret or ConfigMap at run time
            name, value = str(env.get("name", "?")), env["value"]
            what = "a credential" if credential_name(name) and value else credential_value(value)
            if what:
                problems.append(
                    f"env {name} of container {c.get('name', '?')!r} in {object_name(type_, props)} "
                    f"is {what} as a literal value: use valueFrom.secretKeyRef"
                )
    return problems


# --- images carry an explicit tag ---------------------------------------------------------------
def image_problem(image: str) -> str | None:
    """'untagged' or 'latest' for an image that does not pin a version; None when it does."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "untagged"
    return "latest" if last.split(":", 1)[1] == "latest" else None


def is_production(resources: Iterable[Resource]) -> bool:
    """A stack is production when a namespace it declares carries iotistic.io/environment=production."""
    return any(
        r.type == NAMESPACE
        and (get(r.props, "metadata", "labels") or {}).get(ENVIRONMENT_LABEL) == PRODUCTION
        for r in resources
    )


def image_tag_problems(resources: Iterable[Resource]) -> list[tuple[str, str]]:
    problems = []
    for r in resources:
        pod = pod_spec(r.type, r.props)
        for c in containers(pod) if pod is not None else []:
            image = c.get("image")
            problem = image_problem(image) if isinstance(image, str) and known(image) else None
            if problem:
                tag = "has no tag (so it is 'latest')" if problem == "untagged" else "is tagged 'latest'"
                problems.append(
                    (
                        r.urn,
                        f"image {image} of container {c.get('name', '?')!r} in "
                        f"{object_name(r.type, r.props)} {tag}: pin a version",
                    )
                )
    return problems


# --- stack rules --------------------------------------------------------------------------------
def namespace_of(r: Resource) -> str | None:
    ns = get(r.props, "metadata", "namespace")
    return ns if isinstance(ns, str) else None


def customer_namespaces(resources: list[Resource]) -> list[Resource]:
    return [
        r
        for r in resources
        if r.type == NAMESPACE and CUSTOMER_LABEL in (get(r.props, "metadata", "labels") or {})
    ]


def members(ns: Resource, resources: list[Resource]) -> list[Resource]:
    """Resources in namespace `ns`; one whose namespace is not known yet counts when it is a sibling."""
    name = metadata_name(ns.props)
    found = []
    for r in resources:
        where = namespace_of(r)
        if where == name or (
            where is None and r is not ns and r.parent is not None and r.parent == ns.parent
        ):
            found.append(r)
    return found


def default_deny(props: Mapping[str, Any]) -> bool:
    """A NetworkPolicy selecting every pod, for both directions, allowing nothing."""
    selector = get(props, "spec", "podSelector")
    types = set(get(props, "spec", "policyTypes") or [])
    everything = (
        isinstance(selector, Mapping)
        and not selector.get("matchLabels")
        and not selector.get("matchExpressions")
    )
    return (
        everything
        and {"Ingress", "Egress"} <= types
        and not get(props, "spec", "ingress")
        and not get(props, "spec", "egress")
    )


def namespace_guardrail_problems(resources: list[Resource]) -> list[tuple[str, str]]:
    problems = []
    for ns in customer_namespaces(resources):
        inside = members(ns, resources)
        missing = []
        if not any(r.type == RESOURCE_QUOTA for r in inside):
            missing.append("ResourceQuota")
        if not any(r.type == LIMIT_RANGE for r in inside):
            missing.append("LimitRange")
        if not any(r.type == NETWORK_POLICY and default_deny(r.props) for r in inside):
            missing.append("default-deny NetworkPolicy (podSelector {}, policyTypes Ingress and Egress)")
        if missing:
            problems.append(
                (ns.urn, f"customer namespace {metadata_name(ns.props)} has no {', '.join(missing)}")
            )
    return problems


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)$")
_SUFFIXES = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity_bytes(quantity: str) -> float:
    """A Kubernetes storage quantity ("10Gi", "500M", "1e9" not accepted) in bytes; ValueError if not one."""
    match = _QUANTITY.match(str(quantity).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"{quantity!r} is not a storage quantity (e.g. 10Gi)")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def postgres_volume_problems(resources: list[Resource]) -> list[tuple[str, str]]:
    """Each customer's Postgres claim is at least its plan's size (licensing/plans.py)."""
    problems = []
    for ns in customer_namespaces(resources):
        plan_name = (get(ns.props, "metadata", "labels") or {}).get(PLAN_LABEL)
        plan = PLANS.get(plan_name) if isinstance(plan_name, str) else None
        if plan is None:
            problems.append((ns.urn, f"customer namespace {metadata_name(ns.props)} has no known plan label"))
            continue
        for r in members(ns, resources):
            if r.type != STATEFULSET:
                continue
            for claim in get(r.props, "spec", "volumeClaimTemplates") or []:
                size = get(claim, "spec", "resources", "requests", "storage")
                if size is None:
                    continue
                try:
                    small = quantity_bytes(size) < quantity_bytes(plan.postgres_storage)
                except ValueError as e:
                    problems.append((r.urn, f"{object_name(r.type, r.props)}: {e}"))
                    continue
                if small:
                    problems.append(
                        (
                            r.urn,
                            f"volume {get(claim, 'metadata', 'name') or '?'} of "
                            f"{object_name(r.type, r.props)} is {size}, smaller than the "
                            f"{plan.name} plan's {plan.postgres_storage}",
                        )
                    )
    return problems


def stateful_protection_problems(resources: list[Resource]) -> list[tuple[str, str]]:
    """Every stateful resource is protected, or explicitly marked as replaceable by the override."""
    problems = []
    for r in resources:
        if not is_stateful(r.type, r.props) or r.protect:
            continue
        if (get(r.props, "metadata", "annotations") or {}).get(ALLOW_REPLACEMENT) == "true":
            continue
        problems.append(
            (
                r.urn,
                f"{object_name(r.type, r.props)} holds data and is not protected: a replacement or "
                "deletion would lose it (protect it, or set stack config iotistic:allowStatefulReplacement)",
            )
        )
    return problems


STATEFUL_TYPES = (NAMESPACE, STATEFULSET, PVC)
