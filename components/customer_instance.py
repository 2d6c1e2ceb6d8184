"""CustomerInstance: one customer's isolated IoT instance, read top-down in one screen."""

from __future__ import annotations

import pulumi

from components.apps import AppsSettings, api, dashboard, exporter
from components.args import CustomerInstanceArgs
from components.broker_auth import broker_auth
from components.ingress import ingress
from components.mosquitto import MQTT_PORT, mosquitto
from components.namespace import customer_namespace
from components.network_policy import network_policies
from components.ownership import owned
from components.placement import placed
from components.postgres import postgres
from components.quota import quota
from components.secrets import instance_secrets
from components.stateful import protected
from components.suspension import suspended
from tenant_app.config import MQTT_WEBSOCKET_PATH


class CustomerInstance(pulumi.ComponentResource):
    """Namespace, secrets, Postgres, Mosquitto, API, dashboard, exporter, ingress, quota and policy."""

    namespace: pulumi.Output[str]
    instance_url: pulumi.Output[str]
    api_url: pulumi.Output[str]
    mqtt_endpoint: pulumi.Output[str]
    mqtt_websocket_url: pulumi.Output[str]
    database_password: pulumi.Output[str]

    def __init__(self, name: str, args: CustomerInstanceArgs, opts: pulumi.ResourceOptions | None = None):
        opts = protected(owned(opts), args.allow_stateful_replacement)
        super().__init__(
            "iotistic:index:CustomerInstance",
            name,
            None,
            placed(suspended(opts, args.suspended), args.placement),
        )
        child = pulumi.ResourceOptions(parent=self)

        ns = customer_namespace(args.namespace, args.customer_id, args.plan, child, args.environment)
        # Everything else lives in the namespace, so it is created after it and deleted before it.
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        namespace = ns.metadata["name"]

        # Quota and defaults first: every pod below is admitted against them.
        resource_quota, limit_range = quota(namespace, in_ns)
        policies = network_policies(namespace, args.networking, in_ns)
        workloads = pulumi.ResourceOptions(parent=self, depends_on=[ns, resource_quota, limit_range])

        secrets = instance_secrets(
            namespace, args.customer_id, args.email, args.company_name, args.license_key, in_ns
        )
        auth = broker_auth(namespace, in_ns)
        with_secrets = pulumi.ResourceOptions.merge(
            workloads, pulumi.ResourceOptions(depends_on=[secrets.secret, auth.secret])
        )
        postgres(namespace, args.customer_id, args.images.postgres, args.storage, with_secrets)
        mosquitto(
            namespace,
            args.customer_id,
            args.images.mosquitto,
            args.storage.storage_class,
            auth.checksum,
            with_secrets,
        )

        mqtt_host = f"mosquitto.{args.namespace}.svc.cluster.local"
        websocket_url = f"wss://{args.host}{MQTT_WEBSOCKET_PATH}"
        settings = AppsSettings(
            customer_id=args.customer_id,
            license_jwks_url=f"https://billing.{args.networking.base_domain}/.well-known/jwks.json",
            billing_url=f"https://billing.{args.networking.base_domain}",
            mqtt_public_host=mqtt_host,
            mqtt_websocket_url=websocket_url,
            license_public_key=args.license_public_key,
        )
        img = args.images
        api(namespace, settings, img.iotistic("api", img.api_tag), secrets.data_checksum, with_secrets)
        dashboard(namespace, settings, img.iotistic("admin", img.dashboard_tag), with_secrets)
        exporter(namespace, settings, img.iotistic("billing-exporter", img.exporter_tag), with_secrets)
        ingress(namespace, args.customer_id, args.host, args.networking, in_ns)

        self.namespace = namespace
        self.instance_url = pulumi.Output.from_input(f"https://{args.host}")
        self.api_url = pulumi.Output.from_input(f"https://{args.host}/api")
        self.mqtt_endpoint = pulumi.Output.from_input(f"mqtt://{mqtt_host}:{MQTT_PORT}")
        self.mqtt_websocket_url = pulumi.Output.from_input(websocket_url)
        self.database_password = pulumi.Output.secret(secrets.database_password)
        # Kept for callers and tests that inspect the parts (e.g. the Secret's secrecy).
        self.secrets = secrets
        self.network_policies = policies
        self.register_outputs(
            {
                "namespace": self.namespace,
                "instanceUrl": self.instance_url,
                "apiUrl": self.api_url,
                "mqttEndpoint": self.mqtt_endpoint,
                "mqttWebsocketUrl": self.mqtt_websocket_url,
                "databasePassword": self.database_password,
            }
        )
