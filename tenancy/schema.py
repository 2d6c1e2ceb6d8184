"""tenants.yaml: its schema, and validation that reports every problem with its line.

Validation runs before any stack is touched, so a typo never half-applies a change.

    defaults:                 # optional; same sections as overrides, merged under every tenant's
      networking: {base_domain: iotistic.cloud}
    tenants:
      - id: acme              # DNS label: the stack name and namespace customer-acme
        email: ops@acme.example
        company: ACME Corp
        plan: starter         # starter | professional | enterprise
        overrides:            # optional, per tenant
          images: {api_tag: "1.4.2"}
          storage: {storage_class: fast, postgres_size: 20Gi}
          networking: {base_domain: eu.iotistic.cloud}
          placement: {node: real}   # the local cluster's real node (its defaults: images built
                                    # here, storage class local-path; explicit overrides win)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from components.args import Images, Networking, Placement, Storage
from components.placement import LOCAL_IMAGES, LOCAL_STORAGE_CLASS
from components.platform import NAMESPACE as PLATFORM_NAMESPACE
from components.platform import STACK as PLATFORM_STACK
from licensing.plans import PLANS

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Namespaces are "customer-<id>" and must stay a DNS label themselves (63 characters).
MAX_ID_LENGTH = 63 - len("customer-")
# Ids that would name a stack or namespace of the platform itself (the stack name is the id).
RESERVED_IDS = frozenset({PLATFORM_STACK, PLATFORM_NAMESPACE, "default", "kube-system", "kube-public"})
TENANT_KEYS = {"id", "email", "company", "plan", "overrides"}
OVERRIDE_SECTIONS = {"images": Images, "storage": Storage, "networking": Networking, "placement": Placement}


class TenantsFileError(ValueError):
    """tenants.yaml is invalid; `problems` lists every one as 'line N: message'."""

    def __init__(self, path: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{path} is invalid:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Tenant:
    """One customer as the platform manages it."""

    id: str
    email: str
    company: str
    plan: str = "starter"
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def images(self) -> Images:
        return Images(**self.overrides.get("images", {}))

    def storage(self) -> Storage:
        return Storage(**self.overrides.get("storage", {}))

    def networking(self) -> Networking:
        values = dict(self.overrides.get("networking", {}))
        if "cluster_cidrs" in values:
            values["cluster_cidrs"] = tuple(values["cluster_cidrs"])
        return Networking(**values)

    def placement(self) -> Placement:
        return Placement(**self.overrides.get("placement", {}))


def placement_defaults(placement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What a placement brings with it: on the real node, the images built here and local-path volumes."""
    if placement.get("node") != "real":
        return {}
    return {"images": asdict(LOCAL_IMAGES), "storage": {"storage_class": LOCAL_STORAGE_CLASS}}


def effective_overrides(defaults: dict[str, dict], own: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """A tenant's overrides: the file's defaults, under its placement's defaults, under its own."""
    placement = {**defaults.get("placement", {}), **own.get("placement", {})}
    implied = placement_defaults(placement)
    return {
        s: {**defaults.get(s, {}), **implied.get(s, {}), **own.get(s, {})}
        for s in OVERRIDE_SECTIONS
        if s in defaults or s in own or s in implied
    }


def tenant_problems(entry: dict[str, Any]) -> list[str]:
    """Everything wrong with one tenant entry, without line numbers (plain rules, no YAML)."""
    problems = [
        f"unknown key {k!r} (allowed: {', '.join(sorted(TENANT_KEYS))})"
        for k in entry
        if k not in TENANT_KEYS
    ]
    tid = entry.get("id")
    if not isinstance(tid, str) or not DNS_LABEL.match(tid):
        problems.append(f"id {tid!r} is not a DNS label (lowercase letters, digits and '-', 1-63 chars)")
    elif len(tid) > MAX_ID_LENGTH:
        problems.append(f"id {tid!r} is longer than {MAX_ID_LENGTH} characters (namespace customer-{tid})")
    elif tid in RESERVED_IDS:
        problems.append(
            f"id {tid!r} is reserved for the platform (reserved: {', '.join(sorted(RESERVED_IDS))})"
        )
    email = entry.get("email")
    if not isinstance(email, str) or not EMAIL.match(email):
        problems.append(f"email {email!r} is not a valid email address")
    if not isinstance(entry.get("company"), str) or not entry["company"].strip():
        problems.append("company is required")
    plan = entry.get("plan", "starter")
    if plan not in PLANS:
        problems.append(f"unknown plan {plan!r} (plans: {', '.join(PLANS)})")
    overrides = entry.get("overrides", {})
    if not isinstance(overrides, dict):
        problems.append("overrides must be a mapping")
        return problems
    for section, values in overrides.items():
        if section not in OVERRIDE_SECTIONS:
            problems.append(
                f"unknown overrides section {section!r} (allowed: {', '.join(OVERRIDE_SECTIONS)})"
            )
            continue
        allowed = {f.name for f in fields(OVERRIDE_SECTIONS[section])}
        if not isinstance(values, dict):
            problems.append(f"overrides.{section} must be a mapping")
            continue
        for key, value in values.items():
            if key not in allowed:
                problems.append(
                    f"unknown key {key!r} in overrides.{section} (allowed: {', '.join(sorted(allowed))})"
                )
            elif (expected := _value_problem(key, value)) is not None:
                problems.append(f"overrides.{section}.{key} must be {expected}, not {value!r}")
    return problems


# Override keys whose values are not plain strings; every other override key takes a string.
_CHOICES = {"node": Placement.NODES}
_LIST_KEYS = {"cluster_cidrs"}
_MAPPING_KEYS = {"ingress_namespace_labels"}
_OPTIONAL_KEYS = {"storage_class"}


def _value_problem(key: str, value: Any) -> str | None:
    """What `value` should have been for override `key`, or None when it is fine.

    Checked here so a typo fails validation instead of that tenant's deploy.
    """
    if key in _LIST_KEYS:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of strings"
    if key in _MAPPING_KEYS:
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
        return None if ok else "a mapping of strings to strings"
    if value is None and key in _OPTIONAL_KEYS:
        return None
    if key in _CHOICES:
        return None if value in _CHOICES[key] else f"one of {', '.join(_CHOICES[key])}"
    return None if isinstance(value, str) else "a string"


def _line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _load(text: str) -> tuple[yaml.Node | None, object]:
    """One parse for both the node tree (line numbers) and the values: libyaml's C loader when
    PyYAML was built with it (10,000 tenants in well under a second), else the Python one."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def parse_tenants(text: str, path: str = "tenants.yaml") -> list[Tenant]:
    """Parse and validate; raise TenantsFileError listing every problem with its line."""
    try:
        root, data = _load(text)
        data = data or {}
    except yaml.YAMLError as e:
        raise TenantsFileError(path, [f"not valid YAML: {e}"]) from None
    if not isinstance(data, dict):
        raise TenantsFileError(
            path, ["line 1: the file must be a mapping with 'tenants' (and optional 'defaults')"]
        )
    key_lines = {k.value: _line_of(k) for k, _ in (root.value if root else [])}
    unknown = [
        f"line {key_lines.get(k, 1)}: unknown top-level key {k!r} (allowed: defaults, tenants)"
        for k in data
        if k not in ("tenants", "defaults")
    ]
    if unknown:
        raise TenantsFileError(path, unknown)
    entries = data.get("tenants") or []
    defaults = data.get("defaults") or {}
    keys = {k.value: (_line_of(k), v) for k, v in (root.value if root else [])}
    nodes = keys.get("tenants", (0, None))[1]
    lines = [_line_of(n) for n in nodes.value] if isinstance(nodes, yaml.SequenceNode) else []

    problems: list[str] = []
    default_problems = tenant_problems({"id": "x", "email": "x@x.io", "company": "x", "overrides": defaults})
    problems += [f"line {keys['defaults'][0]}: defaults: {p}" for p in default_problems]
    if not isinstance(entries, list):
        # Iterating a mapping or a string would report each key (or character) as a "tenant".
        problems.append(f"line {keys['tenants'][0]}: 'tenants' must be a list of tenant entries")
        entries = []
    seen: dict[str, int] = {}
    tenants: list[Tenant] = []
    for i, entry in enumerate(entries):
        line = lines[i] if i < len(lines) else 0
        if not isinstance(entry, dict):
            problems.append(f"line {line}: a tenant must be a mapping")
            continue
        entry_problems = tenant_problems(entry)
        problems += [f"line {line}: tenant {entry.get('id')!r}: {p}" for p in entry_problems]
        tid = entry.get("id")
        if isinstance(tid, str) and tid in seen:
            problems.append(f"line {line}: duplicate id {tid!r} (first at line {seen[tid]})")
        elif isinstance(tid, str):
            seen[tid] = line
        if not entry_problems and not default_problems:  # broken defaults cannot be merged
            merged = effective_overrides(defaults, entry.get("overrides", {}))
            tenants.append(
                Tenant(entry["id"], entry["email"], entry["company"], entry.get("plan", "starter"), merged)
            )
    if problems:
        raise TenantsFileError(path, problems)
    return tenants


def load_tenants(path: Path) -> list[Tenant]:
    """Read and validate a tenants file; a missing or unreadable file is a TenantsFileError too."""
    try:
        text = path.read_text()
    except OSError as e:
        raise TenantsFileError(str(path), [f"cannot read the file: {e.strerror}"]) from None
    return parse_tenants(text, str(path))
