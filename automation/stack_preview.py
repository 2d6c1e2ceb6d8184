"""Preview one stack under the policy pack and keep what a reviewer needs: the child side of a preview.

Runs in a process of its own (automation.deploy, action "preview" or "preview-destroy"), against
the stack's real state, with the stack's config in a private folder: the shared `stacks/` config
is copied in, never written, so a preview cannot change what the next `up` deploys. The engine's
events give, per changed resource, the operation and the property-level diff (old and new input
values, secrets masked) and every policy violation; `pulumi preview --json` would drop the latter.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from automation.provision import (
    SOURCE_SIGNUP,
    StackResult,
    error_text,
    instance_secret_data,
    write_stack_config,
)
from automation.workspace import POLICY_PACK, StackSettings, open_stack
from components.stateful import is_stateful
from policy.rules import credential_name, credential_value, quantity_bytes
from tenancy.schema import Tenant

MASK = "[secret]"
COUNTED_OPS = ("create", "update", "replace", "delete")
MAX_VALUE_CHARS = 300
_PROTECTED = re.compile(
    r'unable to replace resource "(?P<urn>[^"]+)"|resource "(?P<urn2>[^"]+)" cannot be deleted'
)


# --- property paths and values -------------------------------------------------------------------
def parse_path(path: str) -> list[str | int]:
    """A Pulumi property path (`spec.containers[0].image`, `metadata.labels["a/b"]`) as segments."""
    segments: list[str | int] = []
    i, n = 0, len(path)
    while i < n:
        if path[i] == ".":
            i += 1
        elif path[i] == "[":
            end = path.index("]", i)
            if path[i + 1] == '"':
                end = path.index('"]', i + 2)
                segments.append(json.loads(path[i + 1 : end + 1]))
                i = end + 2
            else:
                segments.append(int(path[i + 1 : end]))
                i = end + 1
        else:
            j = i
            while j < n and path[j] not in ".[":
                j += 1
            segments.append(path[i:j])
            i = j
    return segments


_ABSENT = object()


def lookup(data: Any, segments: list[str | int]) -> Any:
    for seg in segments:
        in_list = isinstance(seg, int) and isinstance(data, list) and seg < len(data)
        if in_list or (isinstance(seg, str) and isinstance(data, Mapping) and seg in data):
            data = data[seg]
        else:
            return _ABSENT
    return data


def secret_path(resource_type: str, segments: list[str | int]) -> bool:
    """A path into a Kubernetes Secret's data, or one whose name says it holds a credential."""
    names = [s for s in segments if isinstance(s, str)]
    in_secret = resource_type == "kubernetes:core/v1:Secret" and names[:1] in (["data"], ["stringData"])
    return in_secret or any(credential_name(s) for s in names)


def mask(value: Any, resource_type: str, segments: list[str | int]) -> Any:
    """`value` with every secret replaced by MASK: engine secrets, Secret data, credential-like names
    or values (the policy pack's own tests of what a credential looks like)."""
    if secret_path(resource_type, segments):
        return MASK
    if isinstance(value, Mapping):
        if value.get("4dabf18193072939515e22adb298388d"):  # a secret the event stream did not mask
            return MASK
        return {
            k: mask(v, resource_type, [*segments, k]) for k, v in value.items() if not str(k).startswith("__")
        }
    if isinstance(value, list):
        return [mask(v, resource_type, [*segments, i]) for i, v in enumerate(value)]
    if isinstance(value, str) and credential_value(value):
        return MASK
    return value


def show(value: Any) -> str:
    """A diff cell: absent values as '-', the rest as compact JSON cut at MAX_VALUE_CHARS."""
    if value is _ABSENT:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def claim_sizes(props: Mapping[str, Any] | None) -> dict[str, str]:
    templates = ((props or {}).get("spec") or {}).get("volumeClaimTemplates") or []
    sizes = {}
    for t in templates:
        size = (((t.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
        if isinstance(size, str):
            sizes[(t.get("metadata") or {}).get("name", "?")] = size
    return sizes


def volume_change(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    """'shrinks data from 10Gi to 5Gi' (or grows) for a StatefulSet's claim templates; '' if the same."""
    before, after = claim_sizes(old), claim_sizes(new)
    notes = []
    for name in sorted(set(before) & set(after)):
        try:
            smaller = quantity_bytes(after[name]) < quantity_bytes(before[name])
        except ValueError:
            continue
        if before[name] != after[name]:
            verb = "shrinks" if smaller else "grows"
            notes.append(f"volume {name} {verb} from {before[name]} to {after[name]}")
    return "; ".join(notes)


# --- events -------------------------------------------------------------------------------------
@dataclass
class Collector:
    """Turns engine events into the report's facts about one stack."""

    steps: list[dict] = field(default_factory=list)
    policies: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def __call__(self, event: auto.EngineEvent) -> None:
        if event.resource_pre_event is not None:
            self.step(event.resource_pre_event.metadata)
        elif event.policy_event is not None:
            p = event.policy_event
            # pulumi-policy sends "<the policy's description>\n<the violation>": keep the violation.
            message = p.message.strip()
            message = message.split("\n", 1)[1].strip() if "\n" in message else message
            self.policies.append(
                {
                    "policy": p.policy_name,
                    "level": p.enforcement_level.lower(),
                    "message": message,
                    "urn": p.resource_urn or "",
                }
            )
        elif event.diagnostic_event is not None and event.diagnostic_event.severity == "error":
            message = event.diagnostic_event.message.strip()
            if message and message not in self.errors:
                self.errors.append(message)

    def step(self, meta: auto.StepEventMetadata) -> None:
        op = meta.op.value if hasattr(meta.op, "value") else str(meta.op)
        if op == "same" or meta.type.startswith("pulumi:providers:") or meta.type == "pulumi:pulumi:Stack":
            return
        if op in ("create-replacement", "delete-replaced", "discard-replaced"):
            return  # the halves of a replacement, already reported as "replace"
        old = meta.old.inputs if meta.old is not None else None
        new = meta.new.inputs if meta.new is not None else None
        self.counts[op] = self.counts.get(op, 0) + 1
        diffs = []
        for path, diff in sorted((meta.detailed_diff or {}).items()):
            segments = parse_path(path)
            kind = diff.diff_kind.value if hasattr(diff.diff_kind, "value") else str(diff.diff_kind)
            if secret_path(meta.type, segments):
                # The provider diffs a Secret's `data` while the inputs hold `stringData`: never shown.
                before = after = MASK
            else:
                before = lookup(old, segments) if old is not None else _ABSENT
                after = lookup(new, segments) if new is not None else _ABSENT
            diffs.append(
                {
                    "path": path,
                    "kind": kind.lower(),
                    "before": show(mask(before, meta.type, segments) if before is not _ABSENT else before),
                    "after": show(mask(after, meta.type, segments) if after is not _ABSENT else after),
                }
            )
        props = new if new is not None else (old or {})
        stateful = op in ("replace", "delete") and is_stateful(meta.type, props or {})
        self.steps.append(
            {
                "op": op,
                "urn": meta.urn,
                "type": meta.type,
                "name": resource_name(meta.type, props),
                "replace_keys": list(meta.keys or []) if op == "replace" else [],
                "diffs": diffs,
                "stateful": stateful,
                "volume": volume_change(old, new) if meta.type.endswith(":StatefulSet") else "",
            }
        )

    def protected_urns(self) -> set[str]:
        """Resources whose replacement or deletion the engine refused because they are protected."""
        found = set()
        for message in self.errors:
            for m in _PROTECTED.finditer(message):
                found.add(m.group("urn") or m.group("urn2"))
        return found

    def details(self) -> dict:
        refused = self.protected_urns()
        for step in self.steps:
            step["refused"] = step["urn"] in refused
        return {"steps": self.steps, "policies": self.policies, "errors": self.errors}


def resource_name(resource_type: str, props: Mapping[str, Any] | None) -> str:
    meta = (props or {}).get("metadata") or {}
    name, ns = meta.get("name"), meta.get("namespace")
    if isinstance(name, str):
        return f"{ns}/{name}" if isinstance(ns, str) and ns else name
    return resource_type.rsplit(":", 1)[-1]


# --- config ---------------------------------------------------------------------------------------
def seed_config(stack_name: str, shared_dir: Path | None, settings: StackSettings) -> bool:
    """Copy the shared Pulumi.<stack>.yaml (if any) into the preview's private config folder."""
    private = settings.stack_config_dir / f"Pulumi.{stack_name}.yaml"
    private.parent.mkdir(parents=True, exist_ok=True)
    shared = shared_dir / f"Pulumi.{stack_name}.yaml" if shared_dir else None
    if shared is not None and shared.exists():
        shutil.copyfile(shared, private)
        return True
    return False


def resources_of(stack: auto.Stack) -> list[dict]:
    deployment = stack.export_stack().deployment or {}
    return deployment.get("resources") or []


@dataclass(frozen=True)
class RebuiltConfig:
    """What a stack's config said when it was last deployed, read back from its state."""

    tenant: Tenant
    license_key: str = field(repr=False)
    source: str
    suspended: bool


def config_from_state(stack_name: str, resources: list[dict]) -> RebuiltConfig:
    """A signup customer's config as last deployed, rebuilt from its state (no config file here).

    The billing database is the real source; the state holds what was deployed from it: the
    instance Secret (email, company, license), the namespace's plan label and the replica counts.
    """
    by_type: dict[str, list[dict]] = {}
    for r in resources:
        by_type.setdefault(r.get("type", ""), []).append(r)
    secret = instance_secret_data(resources)
    ns_labels = next(
        (
            (r["inputs"].get("metadata") or {}).get("labels") or {}
            for r in by_type.get("kubernetes:core/v1:Namespace", [])
        ),
        {},
    )
    outputs = next((r.get("outputs") or {} for r in by_type.get("pulumi:pulumi:Stack", [])), {})
    deployments = by_type.get("kubernetes:apps/v1:Deployment", [])
    suspended = bool(deployments) and all(
        (d["inputs"].get("spec") or {}).get("replicas") == 0 for d in deployments
    )
    if not secret.get("CUSTOMER_EMAIL") or not secret.get("IOTISTIC_LICENSE_KEY"):
        raise RuntimeError(
            f"stack {stack_name!r} has no config file here and its state holds no instance Secret "
            "to rebuild it from"
        )
    tenant = Tenant(
        stack_name,
        (secret["CUSTOMER_EMAIL"]),
        (secret.get("CUSTOMER_COMPANY", stack_name)),
        ns_labels.get("iotistic.io/plan", "starter"),
    )
    source = outputs.get("source") or SOURCE_SIGNUP
    return RebuiltConfig(tenant, secret["IOTISTIC_LICENSE_KEY"], source, suspended)


# --- the preview ----------------------------------------------------------------------------------
def preview_stack(
    stack_name: str,
    settings: StackSettings,
    shared_config_dir: Path | None,
    tenant: Tenant | None,
    license_key: str | None,
    source: str,
    destroy: bool = False,
    with_policy: bool = True,
    log: Callable[[str], None] | None = None,
) -> StackResult:
    """Preview the stack's next `up` (or, `destroy`, what removing it deletes); never raises."""
    start = time.monotonic()
    collector = Collector()
    action = "preview-destroy" if destroy else "preview"
    created: auto.Stack | None = None
    try:
        has_config = seed_config(stack_name, shared_config_dir, settings)
        try:
            stack = open_stack(stack_name, settings, create=False)
        except auto.StackNotFoundError:
            # A new customer: the stack exists for this preview only, so nothing else mistakes an
            # empty stack for a deployed one.
            stack = open_stack(stack_name, settings)
            created = stack
        if destroy:
            return _destroy_details(stack_name, stack, action, start)
        if tenant is not None:
            write_stack_config(stack, tenant, license_key or "", settings, source)
        elif not has_config:
            rebuilt = config_from_state(stack_name, resources_of(stack))
            write_stack_config(
                stack, rebuilt.tenant, rebuilt.license_key, settings, rebuilt.source, rebuilt.suspended
            )
        elif settings.kubeconfig:
            stack.set_config("iotistic:kubeconfig", auto.ConfigValue(settings.kubeconfig))
        policy = {"policy_packs": [str(POLICY_PACK)]} if with_policy else {}
        # This process previews one stack: the program runs inline, as on the deploy path (no
        # language host process importing the SDKs a second time).
        from program import iotistic_program

        ok, error = True, ""
        try:
            stack.preview(
                on_event=collector, on_output=log, color="never", program=iotistic_program, **policy
            )
        except auto.CommandError as e:
            ok, error = False, error_text(e)
        details = collector.details()
        if not ok and collector.errors:
            error = "\n".join(collector.errors)
        counts = {k: v for k, v in collector.counts.items() if k in COUNTED_OPS}
        return StackResult(
            stack_name, action, ok, time.monotonic() - start, counts, error=error, details=details
        )
    except Exception as e:  # one stack's failure is reported, never stops the others
        details = collector.details()
        return StackResult(
            stack_name, action, False, time.monotonic() - start, error=error_text(e), details=details
        )
    finally:
        if created is not None:
            created.workspace.remove_stack(stack_name)


def _destroy_details(stack_name: str, stack: auto.Stack, action: str, start: float) -> StackResult:
    """A removed tenant: every resource of its state would be deleted (protected ones first unprotected)."""
    steps = []
    for r in resources_of(stack):
        if r.get("type", "").startswith("pulumi:") or not r.get("custom", True):
            continue
        inputs = r.get("inputs") or {}
        steps.append(
            {
                "op": "delete",
                "urn": r["urn"],
                "type": r["type"],
                "name": resource_name(r["type"], inputs),
                "replace_keys": [],
                "diffs": [],
                "stateful": is_stateful(r["type"], inputs),
                "volume": "",
                "refused": False,
            }
        )
    details = {"steps": steps, "policies": [], "errors": []}
    counts = {"delete": len(steps)} if steps else {}
    return StackResult(stack_name, action, True, time.monotonic() - start, counts, details=details)
