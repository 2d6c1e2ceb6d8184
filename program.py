"""The Iotistic Pulumi program, as a function. One stack per customer: the stack name is the
customer id.

Inputs come from stack configuration (what the signup service sets through the Automation API)
or, for platform-managed customers, from the tenants.yaml entry with that id. The stack named
`platform` declares the billing namespace instead. Configuration is read here, at the edge.

`__main__.py` runs it for the CLI (`pulumi up` from the project root); the deploy path
(automation.deploy) runs it inline, in the process that drives the engine, so a preview and the
update that follows share one Python start and one import of the SDKs instead of two.
"""

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components import CustomerInstance, CustomerInstanceArgs, Images, Networking, Storage
from components.completion import once_deployed
from components.platform import STACK as PLATFORM_STACK
from components.platform import BillingPlatform, BillingPlatformArgs
from tenancy.schema import Tenant, effective_overrides, load_tenants, tenant_problems

PROJECT_ROOT = Path(__file__).resolve().parent


def kubernetes_provider(config: pulumi.Config) -> k8s.Provider:
    """The cluster: `kubeconfig` config (a path or the file's content), else the provider's defaults."""
    return k8s.Provider(
        "cluster",
        kubeconfig=config.get("kubeconfig"),
        # A cluster that is gone for good must not block `destroy` of its stacks.
        delete_unreachable=True,
        # Update Secrets/ConfigMaps in place (pods roll through checksum annotations) instead of
        # replacing them, which would briefly delete credentials that running pods read.
        enable_secret_mutable=True,
        enable_config_map_mutable=True,
    )


def tenant_from_config(config: pulumi.Config, stack: str) -> Tenant | None:
    """A signup-provisioned customer: its inputs were set as stack config by automation/."""
    if config.get("email") is None:
        return None
    overrides = config.get_object("overrides") or {}
    entry = {
        "id": stack,
        "email": config.require("email"),
        "company": config.require("company"),
        "plan": config.get("plan") or "starter",
        "overrides": overrides,
    }
    problems = tenant_problems(entry)
    if problems:
        raise pulumi.RunError(f"stack config of {stack!r} is invalid: " + "; ".join(problems))
    return Tenant(**{**entry, "overrides": effective_overrides({}, overrides)})


def tenant_from_file(config: pulumi.Config, stack: str) -> Tenant:
    path = Path(config.get("tenantsFile") or PROJECT_ROOT / "tenants.yaml")
    for tenant in load_tenants(path):
        if tenant.id == stack:
            return tenant
    raise pulumi.RunError(
        f"stack {stack!r} has no 'email' config and no entry with id {stack!r} in {path}; "
        "set the customer's config (the signup service does) or add it to tenants.yaml"
    )


def iotistic_program() -> None:
    """Declare the current stack's resources: the billing platform or one customer's instance."""
    config = pulumi.Config()
    stack = pulumi.get_stack()
    provider_opts = pulumi.ResourceOptions(providers=[kubernetes_provider(config)])
    # "production" makes the image-tag policy mandatory; the override lets a change replace or delete
    # stateful resources (namespace, Postgres, volumes), which are protected otherwise.
    environment = config.get("environment") or "development"
    allow_stateful_replacement = config.get_bool("allowStatefulReplacement") or False

    if stack == PLATFORM_STACK:
        platform = BillingPlatform(
            "billing",
            BillingPlatformArgs(
                networking=Networking(**(config.get_object("networking") or {})),
                images=Images(**(config.get_object("images") or {})),
                storage=Storage(**(config.get_object("storage") or {})),
                stripe_secret_key=config.require_secret("stripeSecretKey"),
                stripe_webhook_secret=config.require_secret("stripeWebhookSecret"),
                license_signing_key=config.require_secret("licenseSigningKey"),
                state_backend_url=config.get("stateBackendUrl") or "",
                state_passphrase=config.get_secret("statePassphrase") or "",
                worker_replicas=config.get_int("workerReplicas") or 1,
                environment=environment,
                allow_stateful_replacement=allow_stateful_replacement,
            ),
            opts=provider_opts,
        )
        pulumi.export("namespace", platform.namespace)
        pulumi.export("billingUrl", platform.url)
        pulumi.export("databasePassword", platform.database_password)
        pulumi.export("adminToken", platform.admin_token)
    else:
        tenant = tenant_from_config(config, stack) or tenant_from_file(config, stack)
        instance = CustomerInstance(
            stack,
            CustomerInstanceArgs(
                customer_id=tenant.id,
                email=tenant.email,
                company_name=tenant.company,
                license_key=config.require_secret("licenseKey"),
                plan=tenant.plan,
                images=tenant.images(),
                storage=tenant.storage(),
                networking=tenant.networking(),
                suspended=config.get_bool("suspended") or False,
                placement=tenant.placement(),
                license_public_key=config.get("licensePublicKey"),
                environment=environment,
                allow_stateful_replacement=allow_stateful_replacement,
            ),
            opts=provider_opts,
        )
        pulumi.export("namespace", instance.namespace)
        pulumi.export("instanceUrl", instance.instance_url)
        pulumi.export("apiUrl", instance.api_url)
        pulumi.export("mqttEndpoint", instance.mqtt_endpoint)
        pulumi.export("mqttWebsocketUrl", instance.mqtt_websocket_url)
        pulumi.export("databasePassword", instance.database_password)
        # Bookkeeping for automation/reconcile: who manages this stack and from which tenants.yaml
        # entry. The fingerprint and the license's expiry resolve only once every resource of the
        # instance is deployed, so the outputs of a failed or interrupted update are never recorded:
        # the stack keeps those of its last complete deployment, and the next reconcile sees it as
        # changed (or never deployed) and deploys it again.
        pulumi.export("source", config.get("source") or "tenants.yaml")
        pulumi.export("tenantHash", once_deployed(instance, config.get("tenantHash")))
        pulumi.export("licenseExpiresAt", once_deployed(instance, config.get("licenseExpiresAt")))
