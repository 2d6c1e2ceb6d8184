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
from automation.stack_secrets import SealedValue
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
    sealed_license: SealedValue | None = None,
) -> None:
    """The customer's stack config: plaintext values written to its file; the license as a secret,
    sealed by the caller when the stack has the salt it was sealed for, else through the CLI
    with the value on stdin."""
    config = tenant_config(
        tenant, license_key, settings.kubeconfig, source, suspended, settings.license_public_key
    )
    key = f"iotistic:{LICENSE_KEY}"
    sealed = {key: sealed_license} if license_key and sealed_license else None
    plain = {k: v.value for k, v in config.items()}
    if not set_plain_config(stack.name, settings, plain, sealed) and license_key:
        set_secret(stack, key, license_key)


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


@dataclass
class UpRun:
    """What one `pulumi up` did: the changes of its update, whether the update phase started at
    all (a preview first may stop it), the mandatory policy violations reported, and its error."""

    changes: dict[str, int] = field(default_factory=dict)
    updated: bool = False
    violations: list[str] = field(default_factory=list)
    error: auto.CommandError | None = None


def _policy_violation(event: dict) -> str | None:
    """ "<policy>: <violation>" for a mandatory policy event of the engine's event log."""
    if (event.get("enforcementLevel") or "").lower() != "mandatory":
        return None
    # pulumi-policy sends "<the policy's description>\n<the violation>".
    message = (event.get("message") or "").strip().split("\n", 1)[-1].strip()
    return f"{event.get('policyName')}: {message}"


def run_up(
    stack: auto.Stack,
    policy_packs: list[str],
    on_output: Callable[[str], None] | None = None,
    program: Callable[[], None] | None = None,
    preview_first: bool = True,
) -> UpRun:
    """`pulumi up --yes`: a preview under the policy packs, then the update, in one engine run.

    Stack.up skips the preview and follows the update with three more engine runs (`stack
    output` twice, `stack history`), each decrypting the stack's secrets. Here one engine process
    (one start, one key derivation, one set of plugins) previews, so that the packs' stack-wide
    rules refuse a violation before anything changes, then updates. The changes and the policy
    violations come from the run's own event log, the outputs from the checkpoint
    (automation.bookkeeping.stack_outputs). With `program`, it runs inline.
    """
    run = UpRun()
    with tempfile.TemporaryDirectory(prefix="iotistic-up-") as folder, contextlib.ExitStack() as serving:
        events = Path(folder) / "events.jsonl"
        args = ["up", "--yes", "--color", "never"]
        if not preview_first:
            args.append("--skip-preview")
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
        try:
            stack._run_pulumi_cmd_sync([*args, "--event-log", str(events)], on_output)  # noqa: SLF001
        except auto.CommandError as e:
            run.error = e
        for line in events.read_text().splitlines() if events.exists() else []:
            event = json.loads(line) if line.strip() else {}
            if violation := _policy_violation(event.get("policyEvent") or {}):
                run.violations.append(violation)
            summary = event.get("summaryEvent")
            if summary and not summary.get("isPreview"):
                run.updated = True
                run.changes = {k: v for k, v in (summary.get("resourceChanges") or {}).items() if k != "same"}
            elif event.get("resourcePreEvent") and not event["resourcePreEvent"].get("planning"):
                run.updated = True
    return run


def up_customer(
    tenant: Tenant,
    license_key: str,
    settings: StackSettings,
    on_output: Callable[[str], None] | None = None,
    source: str = SOURCE_SIGNUP,
    suspended: bool = False,
    inline: bool = False,
    sealed_license: SealedValue | None = None,
) -> StackResult:
    """Create or update the customer's stack and wait until every resource is ready.

    `inline` runs the program in this process (program.iotistic_program): the deploy path does,
    so its preview and update import the SDKs once; callers that drive several stacks from one
    process leave it off (the engine runs the program through the language host).
    `sealed_license` is the license sealed by the caller (automation.stack_secrets): a new stack
    gets its salt, and no CLI run is needed to store the license.
    """
    start = time.monotonic()
    program = None
    if inline:
        from program import iotistic_program as program
    try:
        salt = sealed_license.salt if sealed_license else None
        stack = open_stack(tenant.id, settings, encryption_salt=salt)
        write_stack_config(stack, tenant, license_key, settings, source, suspended, sealed_license)
        packs = [str(POLICY_PACK)]
        run = run_up(stack, packs, on_output, program)
        if run.error is not None and not run.updated:
            if run.violations:
                refused = "refused by the policy pack:\n" + "\n".join(f"- {v}" for v in run.violations)
                error = refused + "\n" + error_text(run.error)
                return StackResult(tenant.id, "up", False, time.monotonic() - start, error=error)
            # The preview failed on something else: a provider's dry run can fail where the update
            # works (a named StatefulSet replaced under the explicit override is deleted before it
            # is created again), so the update runs on its own and reports its own errors.
            run = run_up(stack, packs, on_output, program, preview_first=False)
        if run.error is not None:
            raise run.error
        changes = run.changes
        outputs = stack_outputs(settings, tenant.id)
        return StackResult(tenant.id, "up", True, time.monotonic() - start, changes, outputs)
    except Exception as e:  # reported in the summary; one tenant's failure never stops the others
        return StackResult(tenant.id, "up", False, time.monotonic() - start, error=error_text(e))


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
