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
from datetime import UTC, datetime

import jwt
from pulumi import automation as auto

from automation.workspace import StackSettings, open_stack, set_secret
from tenancy.schema import Tenant

TENANT_HASH_KEY = "tenantHash"
LICENSE_KEY = "licenseKey"
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


def license_expiry(license_key: str) -> str:
    """The license's `exp` as ISO 8601 (read, not verified: it is bookkeeping for renewals)."""
    claims = jwt.decode(license_key, options={"verify_signature": False})
    return datetime.fromtimestamp(claims["exp"], UTC).isoformat()


def tenant_config(
    tenant: Tenant,
    license_key: str,
    kubeconfig: str | None,
    source: str,
    suspended: bool = False,
    license_public_key: str | None = None,
) -> dict[str, auto.ConfigValue]:
    """Stack config for a customer, except the license: what __main__.py reads, all plaintext.

    The license is set apart, as a secret read from stdin (see set_license), so it never appears
    on a command line where `ps` would show it.
    """
    config = {
        "source": auto.ConfigValue(source),
        # A suspended instance keeps its data and volumes with every workload scaled to zero.
        "suspended": auto.ConfigValue("true" if suspended else "false"),
        "email": auto.ConfigValue(tenant.email),
        "company": auto.ConfigValue(tenant.company),
        "plan": auto.ConfigValue(tenant.plan),
        "overrides": auto.ConfigValue(json.dumps(tenant.overrides)),
        "licenseExpiresAt": auto.ConfigValue(license_expiry(license_key)),
        TENANT_HASH_KEY: auto.ConfigValue(tenant_hash(tenant)),
    }
    if kubeconfig:
        config["kubeconfig"] = auto.ConfigValue(kubeconfig)
    if license_public_key:
        config["licensePublicKey"] = auto.ConfigValue(license_public_key)
    return {f"iotistic:{k}": v for k, v in config.items()}


def _error_text(e: Exception, limit: int = 20) -> str:
    """What an engine failure says, not a Python traceback: its diagnostics (the `error:` lines
    with the resource each belongs to) when it printed any, else its last lines."""
    if not isinstance(e, auto.CommandError):
        return "".join(traceback.format_exception_only(e)).strip()
    lines = [ln.rstrip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith(" code:")]
    if "Diagnostics:" in (ln.strip() for ln in lines):
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Diagnostics:") + 1
        end = next(
            (i for i, ln in enumerate(lines[start:], start) if ln.strip() in ("Outputs:", "Resources:")),
            len(lines),
        )
        diagnostics = lines[start:end]
        if diagnostics:
            return "\n".join(diagnostics[:limit])
    return "\n".join(lines[-12:])


def _outputs(outputs: dict[str, auto.OutputValue]) -> dict[str, str]:
    return {k: str(v.value) for k, v in outputs.items() if not v.secret}


def up_customer(
    tenant: Tenant,
    license_key: str,
    settings: StackSettings,
    on_output: Callable[[str], None] | None = None,
    source: str = SOURCE_SIGNUP,
    suspended: bool = False,
) -> StackResult:
    """Create or update the customer's stack and wait until every resource is ready."""
    start = time.monotonic()
    try:
        stack = open_stack(tenant.id, settings)
        config = tenant_config(
            tenant, license_key, settings.kubeconfig, source, suspended, settings.license_public_key
        )
        stack.set_all_config(config)
        set_secret(stack, f"iotistic:{LICENSE_KEY}", license_key)
        up = stack.up(on_output=on_output, color="never")
        changes = {k: v for k, v in (up.summary.resource_changes or {}).items() if k != "same"}
        return StackResult(tenant.id, "up", True, time.monotonic() - start, changes, _outputs(up.outputs))
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
        license_key = stack.get_config(f"iotistic:{LICENSE_KEY}").value
    except auto.CommandError:
        license_key = None  # no config file here yet (another machine deployed it): re-signed
    value = {k: v.value for k, v in outputs.items()}
    return DeployedStack(
        customer_id, value.get("source"), value.get("tenantHash"), license_key, value.get("instanceUrl", "")
    )
