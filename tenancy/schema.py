"""tenants.yaml: its schema, and validation that reports every problem with its line.

Validation runs before any stack is touched, so a typo never half-applies a change.

    defaults:                 # optional; merged under every tenant's overrides
      base_domain: iotistic.cloud
    tenants:
      - id: acme              # DNS label: the stack name and namespace customer-acme
        email: ops@acme.example
        company: ACME Corp
        plan: starter         # starter | professional | enterprise
        overrides:            # optional, per tenant
          images: {api_tag: "1.4.2"}
          storage: {storage_class: fast, postgres_size: 20Gi}
          networking: {base_domain: eu.iotistic.cloud}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from components.args import Images, Networking, Storage
from licensing.plans import PLANS

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Namespaces are "customer-<id>" and must stay a DNS label themselves (63 characters).
MAX_ID_LENGTH = 63 - len("customer-")
TENANT_KEYS = {"id", "email", "company", "plan", "overrides"}
OVERRIDE_SECTIONS = {"images": Images, "storage": Storage, "networking": Networking}


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
        problems += [
            f"unknown key {k!r} in overrides.{section} (allowed: {', '.join(sorted(allowed))})"
            for k in values
            if k not in allowed
        ]
    return problems


def _line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def parse_tenants(text: str, path: str = "tenants.yaml") -> list[Tenant]:
    """Parse and validate; raise TenantsFileError listing every problem with its line."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise TenantsFileError(path, [f"not valid YAML: {e}"]) from None
    if not isinstance(data, dict) or set(data) - {"tenants", "defaults"}:
        raise TenantsFileError(
            path, ["line 1: the file must be a mapping with 'tenants' (and optional 'defaults')"]
        )
    entries = data.get("tenants") or []
    defaults = data.get("defaults") or {}
    nodes = next((v for k, v in (root.value if root else []) if k.value == "tenants"), None)
    lines = [_line_of(n) for n in nodes.value] if isinstance(nodes, yaml.SequenceNode) else []

    problems: list[str] = []
    default_problems = tenant_problems({"id": "x", "email": "x@x.io", "company": "x", "overrides": defaults})
    problems += [f"defaults: {p}" for p in default_problems]
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
        if not entry_problems:
            merged = {
                s: {**defaults.get(s, {}), **entry.get("overrides", {}).get(s, {})}
                for s in OVERRIDE_SECTIONS
                if s in defaults or s in entry.get("overrides", {})
            }
            tenants.append(
                Tenant(entry["id"], entry["email"], entry["company"], entry.get("plan", "starter"), merged)
            )
    if problems:
        raise TenantsFileError(path, problems)
    return tenants


def load_tenants(path: Path) -> list[Tenant]:
    return parse_tenants(path.read_text(), str(path))
