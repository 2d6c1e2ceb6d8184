"""Provision, update and remove one customer's stack through the Automation API.

These functions run in a worker process per stack (see automation.reconcile): the Pulumi
Automation API is not safe for concurrent blocking deploys in threads of one process.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pulumi import automation as auto

from automation.workspace import StackSettings, open_stack
from tenancy.schema import Tenant

TENANT_HASH_KEY = "tenantHash"
# Who manages a stack, exported by the program: reconcile only ever removes its own.
SOURCE_TENANTS_FILE = "tenants.yaml"
SOURCE_SIGNUP = "signup"


@dataclass
class StackResult:
    """What happened to one stack: shown in the summary table, never holding a secret."""

    stack: str
    action: str
    ok: bool = True
    seconds: float = 0.0
    changes: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    error: str = ""


def tenant_hash(tenant: Tenant) -> str:
    """A fingerprint of what tenants.yaml says about a tenant; a different one means 'changed'."""
    return hashlib.sha256(json.dumps(asdict(tenant), sort_keys=True).encode()).hexdigest()[:16]


def tenant_config(
    tenant: Tenant,
    license_key: str,
    kubeconfig: str | None,
    source: str,
    license_public_key: str | None = None,
) -> dict[str, auto.ConfigValue]:
    """Stack config for a customer: what __main__.py reads. The license is a secret value."""
    config = {
        "source": auto.ConfigValue(source),
        "email": auto.ConfigValue(tenant.email),
        "company": auto.ConfigValue(tenant.company),
        "plan": auto.ConfigValue(tenant.plan),
        "overrides": auto.ConfigValue(json.dumps(tenant.overrides)),
        "licenseKey": auto.ConfigValue(license_key, secret=True),
        TENANT_HASH_KEY: auto.ConfigValue(tenant_hash(tenant)),
    }
    if kubeconfig:
        config["kubeconfig"] = auto.ConfigValue(kubeconfig)
    if license_public_key:
        config["licensePublicKey"] = auto.ConfigValue(license_public_key)
    return {f"iotistic:{k}": v for k, v in config.items()}


def _error_text(e: Exception) -> str:
    """The readable end of an engine failure (its last lines), not a Python traceback."""
    if isinstance(e, auto.CommandError):
        lines = [ln for ln in str(e).splitlines() if ln.strip() and not ln.startswith(" code:")]
        return "\n".join(lines[-12:])
    return "".join(traceback.format_exception_only(e)).strip()


def _outputs(stack: auto.Stack) -> dict[str, str]:
    return {k: str(v.value) for k, v in stack.outputs().items() if not v.secret}


def up_customer(
    tenant: Tenant,
    license_key: str,
    settings: StackSettings,
    on_output: Callable[[str], None] | None = None,
    source: str = SOURCE_SIGNUP,
) -> StackResult:
    """Create or update the customer's stack and wait until every resource is ready."""
    start = time.monotonic()
    try:
        stack = open_stack(tenant.id, settings)
        stack.set_all_config(
            tenant_config(tenant, license_key, settings.kubeconfig, source, settings.license_public_key)
        )
        up = stack.up(on_output=on_output, color="never")
        changes = {k: v for k, v in (up.summary.resource_changes or {}).items() if k != "same"}
        return StackResult(tenant.id, "up", True, time.monotonic() - start, changes, _outputs(stack))
    except Exception as e:  # reported in the summary; one tenant's failure never stops the others
        return StackResult(tenant.id, "up", False, time.monotonic() - start, error=_error_text(e))


def destroy_customer(
    customer_id: str,
    settings: StackSettings,
    on_output: Callable[[str], None] | None = None,
    remove: bool = True,
) -> StackResult:
    """Destroy every resource of the stack (its namespace included), then remove the stack."""
    start = time.monotonic()
    try:
        stack = open_stack(customer_id, settings)
        result = stack.destroy(on_output=on_output, color="never")
        if remove:
            stack.workspace.remove_stack(customer_id)
        changes = dict(result.summary.resource_changes or {})
        return StackResult(customer_id, "destroy", True, time.monotonic() - start, changes)
    except Exception as e:
        return StackResult(customer_id, "destroy", False, time.monotonic() - start, error=_error_text(e))


@dataclass(frozen=True)
class DeployedStack:
    """What the backend remembers of a stack's last successful deployment."""

    name: str
    source: str | None
    tenant_hash: str | None
    license_key: str | None
    instance_url: str = ""


def deployed_stack(customer_id: str, settings: StackSettings) -> DeployedStack:
    """Read the stack's outputs (from the backend, so it works from any machine) and its license."""
    stack = open_stack(customer_id, settings)
    outputs = stack.outputs()
    try:
        license_key = stack.get_config("iotistic:licenseKey").value
    except auto.CommandError:
        license_key = None  # config lives beside the work dir; a new machine re-signs
    value = {k: v.value for k, v in outputs.items()}
    return DeployedStack(
        customer_id, value.get("source"), value.get("tenantHash"), license_key, value.get("instanceUrl", "")
    )
