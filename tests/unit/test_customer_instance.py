"""CustomerInstance's shape under Pulumi mocks: every number, port, path, label, probe and rule.

The same component is deployed for real by tests/cluster/test_customer_stacks.py.
"""

from __future__ import annotations

import json

import pytest

from components import Networking, Storage
from tests.pulumi_mocks import acme_instance, install_mocks, resolve, run_program

NS = "customer-acme"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"


@pytest.fixture(scope="module")
def deployed():
    mocks = install_mocks(stack="acme")
    holder = {}

    def program():
        holder["instance"] = acme_instance(
            plan="professional",
            storage=Storage(storage_class="standard"),
            networking=Networking(base_domain="iotistic.test", cluster_issuer="test-issuer"),
        )

    run_program(program)
    return mocks, holder["instance"]


def _container(mocks, app: str, kind: str = DEPLOYMENT) -> dict:
    """The main container of a workload (the first one)."""
    return mocks.one(kind, app).inputs["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}


def test_namespace_and_labels(deployed):
    mocks, instance = deployed
    ns = mocks.one("kubernetes:core/v1:Namespace", NS).inputs["metadata"]
    assert ns["labels"]["customer-id"] == "acme"
    assert ns["labels"]["managed-by"] == "iotistic"
    assert ns["labels"]["iotistic.io/plan"] == "professional"
    for mode in ("enforce", "audit", "warn"):
        assert ns["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert resolve(instance.namespace)[0] == NS


def test_every_child_is_parented_to_the_component(deployed):
    mocks, instance = deployed

    def descendants(r):
        for child in r._childResources:
            yield child
            yield from descendants(child)

    # Every registered resource except the component itself sits under it.
    assert len(list(descendants(instance))) == len(mocks.resources) - 1


def test_secret_keys_and_secrecy(deployed):
    mocks, instance = deployed
    secret = mocks.one("kubernetes:core/v1:Secret", "instance-secrets")
    data = secret.inputs["stringData"]
    assert set(data) == {
        "IOTISTIC_LICENSE_KEY",
        "DATABASE_URL",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "CUSTOMER_ID",
        "CUSTOMER_EMAIL",
        "CUSTOMER_COMPANY",
    }
    assert data["POSTGRES_USER"] == "postgres"
    assert data["CUSTOMER_ID"] == "acme" and data["CUSTOMER_EMAIL"] == "ops@acme.example"
    assert data["DATABASE_URL"] == f"postgresql://postgres:{data['POSTGRES_PASSWORD']}@postgres:5432/iotistic"
    (password,) = [
        r
        for r in mocks.of_type("random:index/randomPassword:RandomPassword")
        if r.name == "postgres-password"
    ]
    assert password.inputs["length"] == 32 and password.inputs["special"] is False
    for key in ("IOTISTIC_LICENSE_KEY", "DATABASE_URL", "POSTGRES_PASSWORD"):
        assert secret.is_secret("stringData", key), f"{key} must be a Pulumi secret"
    assert resolve(instance.database_password)[1]


def test_postgres(deployed):
    mocks, _ = deployed
    sts = mocks.one("kubernetes:apps/v1:StatefulSet", "postgres").inputs["spec"]
    assert sts["replicas"] == 1
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim["spec"]["storageClassName"] == "standard"
    c = _container(mocks, "postgres", "kubernetes:apps/v1:StatefulSet")
    assert c["image"] == "postgres:15-alpine"
    assert c["ports"] == [{"name": "postgres", "containerPort": 5432}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["exec"]["command"][0] == "pg_isready"
    svc = mocks.one(SERVICE, "postgres").inputs["spec"]
    assert svc["type"] == "ClusterIP" and svc["ports"][0]["port"] == 5432


def test_mosquitto(deployed):
    mocks, _ = deployed
    conf = mocks.one("kubernetes:core/v1:ConfigMap", "mosquitto-config").inputs["data"]
    assert "listener 1883" in conf["mosquitto.conf"]
    assert "listener 9001\nprotocol websockets" in conf["mosquitto.conf"]
    assert "allow_anonymous false" in conf["mosquitto.conf"]
    assert "persistence true" in conf["mosquitto.conf"]
    # Every account is a dynamic-security client (bound to its client id): no static users.
    assert "password_file" not in conf["mosquitto.conf"] and "acl_file" not in conf["mosquitto.conf"]
    assert set(conf) == {"mosquitto.conf"}
    assert "plugin /usr/lib/mosquitto_dynamic_security.so" in conf["mosquitto.conf"]
    assert "max_queued_messages 200000" in conf["mosquitto.conf"]
    # The broker caps message size: publishes over 16 KiB are refused, packets over 64 KiB cut.
    assert "message_size_limit 16384" in conf["mosquitto.conf"]
    assert "max_packet_size 65536" in conf["mosquitto.conf"]
    c = _container(mocks, "mosquitto")
    assert c["image"] == "eclipse-mosquitto:2.0"
    assert c["readinessProbe"]["tcpSocket"]["port"] == 1883
    ports = {p["name"]: p["port"] for p in mocks.one(SERVICE, "mosquitto").inputs["spec"]["ports"]}
    assert ports == {"mqtt": 1883, "websockets": 9001}
    pod = mocks.one(DEPLOYMENT, "mosquitto").inputs["spec"]
    assert pod["strategy"] == {"type": "Recreate"}  # one pod at a time owns the RWO volume
    (seed,) = pod["template"]["spec"]["initContainers"]
    assert "dynamic-security.json" in seed["command"][-1]
    auth = mocks.one("kubernetes:core/v1:Secret", "mosquitto-auth")
    assert set(auth.inputs["stringData"]) == {
        "dynamic-security.json",
        "ADMIN_MQTT_PASSWORD",
        "INGEST_MQTT_PASSWORD",
    }
    dynsec = json.loads(auth.inputs["stringData"]["dynamic-security.json"])
    assert [c["username"] for c in dynsec["clients"]] == ["iotistic-admin"]
    assert dynsec["defaultACLAccess"]["publishClientSend"] is False


@pytest.mark.parametrize(
    "app,image,port,probe_path,cpu,memory",
    [
        ("api", "docker.io/iotistic/api:latest", 3001, "/health", ("250m", "500m"), ("256Mi", "512Mi")),
        ("dashboard", "docker.io/iotistic/admin:latest", 80, "/", ("100m", "200m"), ("128Mi", "256Mi")),
        (
            "billing-exporter",
            "docker.io/iotistic/billing-exporter:latest",
            9090,
            "/metrics",
            ("50m", "100m"),
            ("64Mi", "128Mi"),
        ),
    ],
)
def test_app_workloads(deployed, app, image, port, probe_path, cpu, memory):
    mocks, _ = deployed
    c = _container(mocks, app)
    assert c["image"] == image
    assert c["resources"] == {
        "requests": {"cpu": cpu[0], "memory": memory[0]},
        "limits": {"cpu": cpu[1], "memory": memory[1]},
    }
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == probe_path
    assert c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (svc_port,) = mocks.one(SERVICE, app).inputs["spec"]["ports"]
    assert svc_port["port"] == port and svc_port["targetPort"] == c["ports"][0]["name"]


def test_app_environment(deployed):
    mocks, _ = deployed
    api = _env(_container(mocks, "api"))
    assert api["IOTISTIC_LICENSE_KEY"] == {"name": "instance-secrets", "key": "IOTISTIC_LICENSE_KEY"}
    assert api["DATABASE_URL"] == {"name": "instance-secrets", "key": "DATABASE_URL"}
    assert api["MQTT_BROKER"] == "mqtt://mosquitto:1883"
    assert api["MQTT_ADMIN_USERNAME"] == "iotistic-admin"
    assert api["MQTT_ADMIN_PASSWORD"] == {"name": "mosquitto-auth", "key": "ADMIN_MQTT_PASSWORD"}
    assert api["MQTT_WEBSOCKET_URL"] == "wss://acme.iotistic.test/mqtt"  # told to devices
    pod = mocks.one(DEPLOYMENT, "api").inputs["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["api", "consumer"]
    assert pod["containers"][1]["command"] == ["python", "-m", "tenant_app.consumer"]
    # Two consumer processes share the subscription; provision creates an account for each.
    assert _env(pod["containers"][1])["CONSUMER_PROCESSES"] == "2"
    assert _env(pod["initContainers"][0])["CONSUMER_PROCESSES"] == "2"
    assert pod["containers"][1]["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert [c["command"] for c in pod["initContainers"]] == [["python", "-m", "tenant_app.provision"]]
    dashboard = _env(_container(mocks, "dashboard"))
    assert dashboard["API_URL"] == "http://api:3001"
    # The dashboard signs people in through billing and verifies tokens with its key set; it holds
    # no broker account.
    assert dashboard["BILLING_URL"] == "https://billing.iotistic.test"
    assert dashboard["LICENSE_JWKS_URL"] == "https://billing.iotistic.test/.well-known/jwks.json"
    assert not [name for name in dashboard if name.startswith("MQTT_")]
    exporter = _env(_container(mocks, "billing-exporter"))
    assert (
        exporter["CUSTOMER_ID"]["key"] == "CUSTOMER_ID" and exporter["DATABASE_URL"]["key"] == "DATABASE_URL"
    )


def test_api_pods_roll_when_secrets_change(deployed):
    mocks, _ = deployed
    annotations = mocks.one(DEPLOYMENT, "api").inputs["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/secrets"]) == 64  # sha256 hex of the secret data


def test_ingress(deployed):
    mocks, instance = deployed
    ing = mocks.one("kubernetes:networking.k8s.io/v1:Ingress", "instance").inputs
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "test-issuer"
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["acme.iotistic.test"], "secretName": "acme-tls"}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "acme.iotistic.test"
    routes = {
        p["path"]: (p["backend"]["service"]["name"], p["backend"]["service"]["port"]["number"])
        for p in rule["http"]["paths"]
    }
    assert routes == {
        "/": ("dashboard", 80),
        "/api": ("api", 3001),
        "/metrics": ("billing-exporter", 9090),
        "/mqtt": ("mosquitto", 9001),  # MQTT over secure websockets for devices outside the cluster
    }
    annotations = ing["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "2m"
    assert resolve(instance.mqtt_websocket_url)[0] == "wss://acme.iotistic.test/mqtt"
    # TLS ends at the Ingress: no Service of the instance is exposed by a LoadBalancer of its own.
    assert {svc.inputs["spec"]["type"] for svc in mocks.of_type(SERVICE)} == {"ClusterIP"}
    assert resolve(instance.instance_url)[0] == "https://acme.iotistic.test"
    assert resolve(instance.api_url)[0] == "https://acme.iotistic.test/api"
    assert resolve(instance.mqtt_endpoint)[0] == "mqtt://mosquitto.customer-acme.svc.cluster.local:1883"


def test_quota_and_limit_range(deployed):
    mocks, _ = deployed
    hard = mocks.one("kubernetes:core/v1:ResourceQuota", "instance-quota").inputs["spec"]["hard"]
    assert hard == {
        "requests.cpu": "4",
        "limits.cpu": "4",
        "requests.memory": "4Gi",
        "limits.memory": "4Gi",
        "persistentvolumeclaims": "5",
        "services": "10",
    }
    (limits,) = mocks.one("kubernetes:core/v1:LimitRange", "container-defaults").inputs["spec"]["limits"]
    assert limits["type"] == "Container" and limits["default"] and limits["defaultRequest"]


def test_network_policies(deployed):
    mocks, _ = deployed
    policy = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
    deny = mocks.one(policy, "default-deny").inputs["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    (rule,) = mocks.one(policy, "allow-ingress").inputs["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"podSelector": {}},
    ]
    dns, same_ns, web = mocks.one(policy, "allow-egress").inputs["spec"]["egress"]
    assert dns["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    ]
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    assert same_ns == {"to": [{"podSelector": {}}]}
    assert web["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]
    assert sorted(p["port"] for p in web["ports"]) == [80, 443]


def test_every_pod_fits_the_quota(deployed):
    """The sum of limits of all containers stays under the namespace quota (room for a rolling update)."""
    mocks, _ = deployed

    def cpu(v: str) -> float:
        return float(v[:-1]) / 1000 if v.endswith("m") else float(v)

    def mem(v: str) -> int:
        return int(v[:-2]) * (1024 if v.endswith("Gi") else 1)

    containers = [
        c
        for app, kind in [(a, DEPLOYMENT) for a in ("api", "dashboard", "billing-exporter", "mosquitto")]
        + [("postgres", "kubernetes:apps/v1:StatefulSet")]
        for c in mocks.one(kind, app).inputs["spec"]["template"]["spec"]["containers"]
    ]
    assert len(containers) == 6  # the API pod runs the MQTT consumer beside it
    assert sum(cpu(c["resources"]["limits"]["cpu"]) for c in containers) <= 4 - 0.5
    assert sum(mem(c["resources"]["limits"]["memory"]) for c in containers) <= 4096 - 512
    # A rolling update runs a second API pod beside the first: it must fit too.
    api = mocks.one(DEPLOYMENT, "api").inputs["spec"]["template"]["spec"]["containers"]
    total = sum(cpu(c["resources"]["limits"]["cpu"]) for c in containers)
    assert total + sum(cpu(c["resources"]["limits"]["cpu"]) for c in api) <= 4


def test_every_kubernetes_object_lets_up_repair_drift(deployed):
    mocks, _ = deployed
    objects = [r for r in mocks.resources if r.type.startswith("kubernetes:")]
    assert len(objects) == 21  # the whole instance: see test names above
    for r in objects:
        assert r.inputs["metadata"]["annotations"]["pulumi.com/patchForce"] == "true", r.name


def test_services_skip_the_endpoint_settle_wait_but_workloads_are_awaited(deployed):
    mocks, _ = deployed
    services = mocks.of_type(SERVICE)
    assert len(services) == 5  # postgres, mosquitto, api, dashboard, billing-exporter
    for svc in services:
        assert svc.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true", svc.name
    for workload in mocks.of_type(DEPLOYMENT) + mocks.of_type("kubernetes:apps/v1:StatefulSet"):
        assert "pulumi.com/skipAwait" not in workload.inputs["metadata"]["annotations"], workload.name
