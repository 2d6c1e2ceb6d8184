"""Provision, update and remove one customer's stack through the Automation API.

These functions run in a worker process per stack (see automation.reconcile): the Pulumi
Automation API is not safe for concurrent blocking deploys in threads of one process.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import jwt
from pulumi import automation as auto
from pulumi.automation._server import LanguageServer
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import language_pb2_grpc

from automation.bookkeeping import stack_outputs
from automation.workspace import (
    POLICY_PACK,
    StackSettings,
    open_stack,
    set_plain_config,
    set_secret,
    stack_cli,
)
from tenancy.schema import Tenant

TENANT_HASH_KEY = "tenantHash"
LICENSE_KEY = "licenseKey"
# Where this deployment runs ("production" makes more policies mandatory): written into every
# customer stack's config as iotistic:environment when set.
ENVIRONMENT_VARIABLE = "IOTISTIC_ENVIRONMENT"
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
    # A preview's findings (automation.stack_preview): steps with diffs, policy violations, errors.
    details: dict = field(default_factory=dict)


def tenant_hash(tenant: Tenant) -> str:
    """A fingerprint of what tenants.yaml says about a tenant; a different one means 'changed'."""
    return hashlib.sha256(json.dumps(asdict(tenant), sort_keys=True).encode()).hexdigest()[:16]


def license_expiry(license_key: str) -> str | None:
    """The license's `exp` as ISO 8601 (read, not verified: it is bookkeeping for renewals)."""
    try:
        claims = jwt.decode(license_key, options={"verify_signature": False})
        return datetime.fromtimestamp(claims["exp"], UTC).isoformat()
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError):
        return None


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
        TENANT_HASH_KEY: auto.ConfigValue(tenant_hash(tenant)),
    }
    if expires := license_expiry(license_key):
        config["licenseExpiresAt"] = auto.ConfigValue(expires)
    if kubeconfig:
        config["kubeconfig"] = auto.ConfigValue(kubeconfig)
    if license_public_key:
        config["licensePublicKey"] = auto.ConfigValue(license_public_key)
    if os.environ.get(ENVIRONMENT_VARIABLE):
        config["environment"] = auto.ConfigValue(os.environ[ENVIRONMENT_VARIABLE])
    return {f"iotistic:{k}": v for k, v in config.items()}


def write_stack_config(
    stack: auto.Stack,
    tenant: Tenant,
    license_key: str,
    settings: StackSettings,
    source: str,
    suspended: bool = False,
) -> None:
    """The customer's stack config: plaintext values written to its file, the license as a secret
    via stdin."""
    config = tenant_config(
        tenant, license_key, settings.kubeconfig, source, suspended, settings.license_public_key
    )
    set_plain_config(stack.name, settings, {k: v.value for k, v in config.items()})
    if license_key:
        set_secret(stack, f"iotistic:{LICENSE_KEY}", license_key)


def error_text(e: Exception, limit: int = 20) -> str:
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


@contextlib.contextmanager
def inline_program_server(program: Callable[[], None]) -> Iterator[str]:
    """Serve `program` to the engine from this process (the Automation API's inline programs);
    yields the address for `pulumi up --client`. The same setup as Stack.up's (SDK v3.259)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_GRPC_CHANNEL_OPTIONS)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageServer(program), server)
    port = server.add_insecure_port(address="127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def run_up(
    stack: auto.Stack,
    policy_packs: list[str],
    on_output: Callable[[str], None] | None = None,
    program: Callable[[], None] | None = None,
) -> dict[str, int]:
    """`pulumi up` as Stack.up runs it, and the changes it made (creates, updates, ...).

    Stack.up follows the update with three more engine runs (`stack output` twice, `stack history`),
    each decrypting the stack's secrets: about 1 s of CPU per deploy, a sixth of what a customer
    costs. The changes come from the update's own event log instead, and the outputs from the
    checkpoint (automation.bookkeeping.stack_outputs). With `program`, it runs inline.
    """
    with tempfile.TemporaryDirectory(prefix="iotistic-up-") as folder, contextlib.ExitStack() as serving:
        events = Path(folder) / "events.jsonl"
        args = ["up", "--yes", "--skip-preview", "--color", "never"]
        for pack in policy_packs:
            args += ["--policy-pack", pack]
        if program is None:
            args += ["--exec-kind", "auto.local"]
        else:
            args += [
                "--exec-kind",
                "auto.inline",
                f"--client={serving.enter_context(inline_program_server(program))}",
            ]
        stack._run_pulumi_cmd_sync([*args, "--event-log", str(events)], on_output)  # noqa: SLF001
        changes: dict[str, int] = {}
        for line in events.read_text().splitlines() if events.exists() else []:
            summary = json.loads(line).get("summaryEvent") if line.strip() else None
            if summary:
                changes = dict(summary.get("resourceChanges") or {})
    return {k: v for k, v in changes.items() if k != "same"}


def up_customer(
    tenant: Tenant,
    license_key: str,
    settings: StackSettings,
    on_output: Callable[[str], None] | None = None,
    source: str = SOURCE_SIGNUP,
    suspended: bool = False,
    inline: bool = False,
) -> StackResult:
    """Create or update the customer's stack and wait until every resource is ready.

    `inline` runs the program in this process (program.iotistic_program): the deploy path does,
    so its preview and update import the SDKs once; callers that drive several stacks from one
    process leave it off (the engine runs the program through the language host).
    """
    start = time.monotonic()
    program = None
    if inline:
        from program import iotistic_program as program
    try:
        stack = open_stack(tenant.id, settings)
        write_stack_config(stack, tenant, license_key, settings, source, suspended)
        packs = [str(POLICY_PACK)]
        # The Automation API's `up` skips the preview, and the pack's stack-wide rules only run
        # once the program has finished: previewing first refuses a violation before anything changes.
        violations: list[str] = []
        try:
            stack.preview(
                on_output=on_output,
                on_event=mandatory_violations(violations),
                color="never",
                policy_packs=packs,
                program=program,
            )
        except auto.CommandError as e:
            # Anything but the policy is left to `up`, which reports its own errors (a provider's
            # dry run can fail where the update works: a named StatefulSet replaced under the
            # explicit override is deleted before it is created again).
            if violations:
                refused = "refused by the policy pack:\n" + "\n".join(f"- {v}" for v in violations)
                error = refused + "\n" + error_text(e)
                return StackResult(tenant.id, "up", False, time.monotonic() - start, error=error)
        changes = run_up(stack, packs, on_output, program)
        outputs = stack_outputs(settings, tenant.id)
        return StackResult(tenant.id, "up", True, time.monotonic() - start, changes, outputs)
    except Exception as e:  # reported in the summary; one tenant's failure never stops the others
        return StackResult(tenant.id, "up", False, time.monotonic() - start, error=error_text(e))


def mandatory_violations(found: list[str]) -> Callable[[auto.EngineEvent], None]:
    """An event handler that collects "<policy>: <violation>" for each mandatory policy violation."""

    def on_event(event: auto.EngineEvent) -> None:
        p = event.policy_event
        if p is not None and p.enforcement_level.lower() == "mandatory":
            # pulumi-policy sends "<the policy's description>\n<the violation>".
            message = p.message.strip().split("\n", 1)[-1].strip()
            found.append(f"{p.policy_name}: {message}")

    return on_event


def destroy_customer(
    customer_id: str,
    settings: StackSettings,
    on_output: Callable[[str], None] | None = None,
    remove: bool = True,
) -> StackResult:
    """Destroy every resource of the stack (its namespace included), then remove the stack.

    Stateful resources are protected against every other path; removing the customer is the one
    explicit decision that lifts the protection (components/stateful.py).
    """
    start = time.monotonic()
    try:
        stack = open_stack(customer_id, settings)
        unprotect = stack_cli(customer_id, settings, "state", "unprotect", "--all", "--yes")
        if unprotect.returncode != 0:
            raise RuntimeError(f"could not unprotect the stack's resources: {unprotect.stderr.strip()}")
        result = stack.destroy(on_output=on_output, color="never")
        if remove:
            stack.workspace.remove_stack(customer_id)
        changes = dict(result.summary.resource_changes or {})
        return StackResult(customer_id, "destroy", True, time.monotonic() - start, changes)
    except Exception as e:
        return StackResult(customer_id, "destroy", False, time.monotonic() - start, error=error_text(e))


def state_value(value: Any) -> Any:
    """A value of an exported (decrypted) state: secrets keep a {sig, plaintext} wrapper there."""
    if isinstance(value, dict) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


def instance_secret_data(resources: list[dict]) -> dict[str, str]:
    """The instance Secret's values in a stack's exported resources ({} if none).

    The provider keeps them as base64 `data` (the program's `stringData`, converted), one secret.
    """
    for r in resources:
        inputs = r.get("inputs") or {}
        if r.get("type") == "kubernetes:core/v1:Secret" and (inputs.get("metadata") or {}).get("name") == (
            "instance-secrets"
        ):
            plain = {k: str(state_value(v)) for k, v in (state_value(inputs.get("stringData")) or {}).items()}
            for k, v in (state_value(inputs.get("data")) or {}).items():
                plain.setdefault(k, base64.b64decode(str(state_value(v))).decode())
            return plain
    return {}


def license_from_state(stack: auto.Stack) -> str | None:
    resources = (stack.export_stack().deployment or {}).get("resources") or []
    return instance_secret_data(resources).get("IOTISTIC_LICENSE_KEY")


def deployed_license(customer_id: str, settings: StackSettings) -> str | None:
    """The license the stack holds: its config (decrypted), else, where no config file exists (another
    machine deployed it), the one in its state; None for a stack never deployed."""
    stack = open_stack(customer_id, settings)
    try:
        return stack.get_config(f"iotistic:{LICENSE_KEY}").value
    except auto.CommandError:
        return license_from_state(stack)
