"""The platform stack: the billing namespace with the billing API, its provisioning worker, Postgres
and secrets.

The API and the worker run the same `iotistic/billing` image (billing/Dockerfile: the service and
the Pulumi engine built from Go modules). The worker provisions customer stacks with the
`billing-deployer` service account (in-cluster credentials), keeping their state in the backend
named by `stateBackendUrl` (S3 in production), its secrets encrypted with `statePassphrase`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.args import Images, Networking, Storage
from components.labels import DEFAULT_ENVIRONMENT, ENVIRONMENT_LABEL
from components.namespace import POD_SECURITY_LABELS
from components.ownership import owned
from components.postgres import postgres
from components.secrets import database_url, opaque_secret, random_password
from components.stateful import protected
from components.workload import (
    MANAGED_BY,
    Resources,
    app_labels,
    deployment_with_service,
    http_probe,
    pod_template,
)
from components.workload import container as container_spec

# The stack that declares the platform itself (not a customer): its name can never be a customer id.
STACK = "platform"
NAMESPACE = "billing"
SECRET_NAME = "billing-secrets"
BILLING_PORT = 3000
DATABASE = "billing"
BILLING = Resources(cpu_request="250m", cpu_limit="1", memory_request="256Mi", memory_limit="1Gi")
# A deploy runs the Pulumi CLI, the language host and two providers: ~0.6 GiB each at its peak.
WORKER = Resources(cpu_request="500m", cpu_limit="2", memory_request="1Gi", memory_limit="2Gi")
APP_UID = 10001
WORKER_CONCURRENCY = 2
SECRET_ENV = (
    "DATABASE_URL",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "LICENSE_SIGNING_KEY",
    "ADMIN_TOKEN",
    "PULUMI_CONFIG_PASSPHRASE",
)

# The billing API provisions customer stacks: it manages customer namespaces and what they contain.
DEPLOYER_RULES = [
    {
        "apiGroups": [""],
        "resources": [
            "namespaces",
            "secrets",
            "configmaps",
            "services",
            "persistentvolumeclaims",
            "resourcequotas",
            "limitranges",
        ],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["ingresses", "networkpolicies"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods", "endpoints", "events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
]


@dataclass(frozen=True)
class BillingPlatformArgs:
    """Inputs of the platform stack; every key is a Pulumi secret (set with `config set --secret`)."""

    stripe_secret_key: pulumi.Input[str]
    stripe_webhook_secret: pulumi.Input[str]
    license_signing_key: pulumi.Input[str]
    # Where the worker keeps customer stacks' state, and the passphrase of their secrets.
    state_backend_url: str = ""
    state_passphrase: pulumi.Input[str] = ""
    networking: Networking = field(default_factory=Networking)
    images: Images = field(default_factory=Images)
    storage: Storage = field(default_factory=Storage)
    image_tag: str = "latest"
    worker_replicas: int = 1
    environment: str = DEFAULT_ENVIRONMENT
    allow_stateful_replacement: bool = False


class BillingPlatform(pulumi.ComponentResource):
    """billing namespace: billing API (Deployment/Service/Ingress at billing.{domain}), provisioning
    worker, Postgres, secrets and the deployer's RBAC."""

    namespace: pulumi.Output[str]
    url: pulumi.Output[str]
    database_password: pulumi.Output[str]
    admin_token: pulumi.Output[str]

    def __init__(self, name: str, args: BillingPlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(
            "iotistic:index:BillingPlatform",
            name,
            None,
            protected(owned(opts), args.allow_stateful_replacement),
        )
        child = pulumi.ResourceOptions(parent=self)
        ns = k8s.core.v1.Namespace(
            "namespace",
            metadata={
                "name": NAMESPACE,
                "labels": {**MANAGED_BY, **POD_SECURITY_LABELS, ENVIRONMENT_LABEL: args.environment},
            },
            opts=child,
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        namespace = ns.metadata["name"]

        db_password = random_password("billing-postgres-password", child)
        admin_token = random_password("billing-admin-token", child)
        data = {
            "DATABASE_URL": database_url(db_password.result, DATABASE),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": db_password.result,
            "POSTGRES_DB": DATABASE,
            "STRIPE_SECRET_KEY": pulumi.Output.secret(args.stripe_secret_key),
            "STRIPE_WEBHOOK_SECRET": pulumi.Output.secret(args.stripe_webhook_secret),
            "LICENSE_SIGNING_KEY": pulumi.Output.secret(args.license_signing_key),
            "ADMIN_TOKEN": admin_token.result,
            "PULUMI_CONFIG_PASSPHRASE": pulumi.Output.secret(args.state_passphrase),
        }
        secret, secrets_checksum = opaque_secret(SECRET_NAME, namespace, data, in_ns)
        with_secret = pulumi.ResourceOptions(parent=self, depends_on=[ns, secret])
        postgres(namespace, "", args.images.postgres, args.storage, with_secret, secret_name=SECRET_NAME)

        account = k8s.core.v1.ServiceAccount(
            "deployer", metadata={"name": "billing-deployer", "namespace": namespace}, opts=in_ns
        )
        role = k8s.rbac.v1.ClusterRole(
            "deployer",
            metadata={"name": "iotistic-billing-deployer", "labels": MANAGED_BY},
            rules=DEPLOYER_RULES,
            opts=child,
        )
        k8s.rbac.v1.ClusterRoleBinding(
            "deployer",
            metadata={"name": "iotistic-billing-deployer", "labels": MANAGED_BY},
            role_ref={
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role.metadata["name"],
            },
            subjects=[{"kind": "ServiceAccount", "name": account.metadata["name"], "namespace": namespace}],
            opts=child,
        )

        host = f"billing.{args.networking.base_domain}"
        env = [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": k}}} for k in SECRET_ENV
        ]
        env += [
            {"name": "BIND_HOST", "value": "0.0.0.0"},
            {"name": "BILLING_PORT", "value": str(BILLING_PORT)},
            {"name": "BASE_DOMAIN", "value": args.networking.base_domain},
            {"name": "BILLING_PUBLIC_URL", "value": f"https://{host}"},
            {"name": "IOTISTIC_BACKEND_URL", "value": args.state_backend_url},
            {"name": "WORKER_CONCURRENCY", "value": str(WORKER_CONCURRENCY)},
        ]
        image = args.images.iotistic("billing", args.image_tag)
        main = container_spec(
            "billing-api",
            image,
            {"http": BILLING_PORT},
            BILLING,
            http_probe("/health", "http"),
            env=env,
            run_as_user=APP_UID,
            command=["python", "-m", "billing", "serve"],
        )
        deployment_with_service(
            "billing-api",
            namespace,
            "",
            main,
            with_secret,
            service_ports={"http": BILLING_PORT},
            annotations={"checksum/secrets": secrets_checksum},
            service_account=account.metadata["name"],
        )
        worker = container_spec(
            "billing-worker",
            image,
            {},
            WORKER,
            None,
            env=env,
            run_as_user=APP_UID,
            command=["python", "-m", "billing", "worker"],
        )
        worker_deployment(
            namespace,
            worker,
            args.worker_replicas,
            secrets_checksum,
            account.metadata["name"],
            with_secret,
        )
        k8s.networking.v1.Ingress(
            "ingress",
            metadata={
                "name": "billing",
                "namespace": namespace,
                "annotations": {"cert-manager.io/cluster-issuer": args.networking.cluster_issuer},
            },
            spec={
                "ingressClassName": args.networking.ingress_class,
                "tls": [{"hosts": [host], "secretName": "billing-tls"}],
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "billing-api", "port": {"number": BILLING_PORT}}
                                    },
                                }
                            ]
                        },
                    }
                ],
            },
            opts=in_ns,
        )

        self.namespace = namespace
        self.url = pulumi.Output.from_input(f"https://{host}")
        self.database_password = pulumi.Output.secret(db_password.result)
        self.admin_token = pulumi.Output.secret(admin_token.result)
        self.register_outputs(
            {
                "namespace": self.namespace,
                "url": self.url,
                "databasePassword": self.database_password,
                "adminToken": self.admin_token,
            }
        )


def worker_deployment(
    namespace: pulumi.Input[str],
    container: dict,
    replicas: int,
    secrets_checksum: pulumi.Input[str],
    service_account: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> k8s.apps.v1.Deployment:
    """The provisioning worker: no port, no Service; scale it out with `replicas` (or more pods)."""
    return k8s.apps.v1.Deployment(
        "billing-worker",
        metadata={
            "name": "billing-worker",
            "namespace": namespace,
            "labels": app_labels("billing-worker", ""),
        },
        spec={
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "billing-worker"}},
            "template": pod_template(
                "billing-worker",
                "",
                [container],
                annotations={"checksum/secrets": secrets_checksum},
                service_account=service_account,
            ),
        },
        opts=opts,
    )
