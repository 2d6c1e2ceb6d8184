"""Each policy rule (policy/rules.py) on plain inputs, and the real components passing all of them.

The same rules run on the real engine in tests/cluster/test_policy_pack.py, each broken once.
"""

from __future__ import annotations

import copy

import pulumi
import pytest
from pulumi_policy import PolicyResource, PolicyResourceOptions, StackValidationArgs
from pulumi_policy.policy import PolicyCustomTimeouts

from components import CustomerInstance, CustomerInstanceArgs, Images, Storage
from components.platform import BillingPlatform, BillingPlatformArgs
from components.stateful import ALLOW_REPLACEMENT, _protect
from policy import pack, rules
from tests.pulumi_mocks import install_mocks, run_program

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def workload(
    container: dict | None = None, pod_security: dict | None = None, ns: str = "customer-acme"
) -> dict:
    c = {
        "name": "api",
        "image": "docker.io/iotistic/api:1.4.2",
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "200m", "memory": "256Mi"},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    c.update(container or {})
    pod = {"containers": [c], "securityContext": pod_security or {}}
    return {"metadata": {"name": "api", "namespace": ns}, "spec": {"template": {"spec": pod}}}


# --- containers: requests and limits, non-root, no privilege escalation ----------------------------
def test_a_complete_container_passes():
    assert rules.container_problems(DEPLOYMENT, workload()) == []


def test_a_container_without_limits_is_named_with_what_it_lacks():
    props = workload({"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}})
    assert rules.container_problems(DEPLOYMENT, props) == [
        "container 'api' of Deployment customer-acme/api has no cpu limit, memory limit"
    ]


def test_init_containers_and_cronjobs_are_checked_too():
    props = workload()
    props["spec"]["template"]["spec"]["initContainers"] = [{"name": "setup", "image": "busybox:1.36"}]
    problems = rules.container_problems(DEPLOYMENT, props)
    assert any("container 'setup'" in p and "cpu request" in p for p in problems)
    assert any("'setup'" in p and "may run as root" in p for p in problems)
    cron = {"metadata": {"name": "job"}, "spec": {"jobTemplate": {"spec": props["spec"]}}}
    cron_problems = rules.container_problems("kubernetes:batch/v1:CronJob", cron)
    assert [p.replace("CronJob job", "Deployment customer-acme/api") for p in cron_problems] == problems


def test_root_and_privilege_escalation_are_refused():
    root = workload({"securityContext": {"allowPrivilegeEscalation": False, "runAsUser": 0}})
    assert rules.container_problems(DEPLOYMENT, root) == [
        "container 'api' of Deployment customer-acme/api runs as root (runAsUser: 0)"
    ]
    escalates = workload({"securityContext": {"runAsNonRoot": True}})
    assert rules.container_problems(DEPLOYMENT, escalates) == [
        "container 'api' of Deployment customer-acme/api allows privilege escalation: "
        "set allowPrivilegeEscalation: false"
    ]


def test_run_as_non_root_may_come_from_the_pod():
    props = workload({"securityContext": {"allowPrivilegeEscalation": False}}, {"runAsNonRoot": True})
    assert rules.container_problems(DEPLOYMENT, props) == []


def test_values_unknown_during_preview_are_not_violations():
    props = workload({"resources": UNKNOWN, "securityContext": {"allowPrivilegeEscalation": False}})
    props["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": UNKNOWN}
    assert rules.container_problems(DEPLOYMENT, props) == []


# --- Services -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LoadBalancer", "NodePort"])
def test_an_external_service_in_a_customer_namespace_is_refused(kind):
    props = {"metadata": {"name": "api", "namespace": "customer-acme"}, "spec": {"type": kind}}
    assert rules.service_problems(rules.SERVICE, props) == [
        f"Service customer-acme/api is of type {kind}: customer instances are reached through their "
        "Ingress only (use ClusterIP)"
    ]


def test_cluster_ip_services_and_other_namespaces_are_fine():
    cluster_ip = {"metadata": {"name": "api", "namespace": "customer-acme"}, "spec": {"type": "ClusterIP"}}
    ingress = {"metadata": {"name": "lb", "namespace": "ingress-nginx"}, "spec": {"type": "LoadBalancer"}}
    assert rules.service_problems(rules.SERVICE, cluster_ip) == []
    assert rules.service_problems(rules.SERVICE, ingress) == []


# --- credentials --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["DB_PASSWORD", "apiKey", "stripe-secret", "LICENSE_KEY", "PULUMI_CONFIG_PASSPHRASE", "token"]
)
def test_credential_names(name):
    assert rules.credential_name(name)


@pytest.mark.parametrize(
    "name", ["PASSWORD_FILE", "SECRET_NAME", "MQTT_USERNAME", "IOTISTIC_LICENSE_KEY_FILE", "BYPASS", "KEYS"]
)
def test_names_that_only_point_at_a_credential(name):
    assert not rules.credential_name(name)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("postgresql://postgres:hunter2@postgres:5432/iotistic", "a URL with a password"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE...", "a private key"),
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJlLXZhbHVl", "a JSON Web Token"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a Stripe key"),
        ("[db]\npassword = hunter2\n", "a password assignment"),
    ],
)
def test_credential_values(value, what):
    assert rules.credential_value(value) == what


def test_a_credential_in_a_configmap_is_refused_by_key_or_by_value():
    props = {
        "metadata": {"name": "settings", "namespace": "customer-acme"},
        "data": {
            "db-password": "x",
            "app.ini": "url = postgresql://u:p@db/x",
            "mosquitto.conf": "password_file /a",
        },
    }
    assert rules.credential_problems(rules.CONFIGMAP, props) == [
        "ConfigMap customer-acme/settings key 'db-password' holds a credential: keep credentials in a Secret",
        "ConfigMap customer-acme/settings key 'app.ini' holds a URL with a password: keep credentials in "
        "a Secret",
    ]


def test_a_literal_credential_in_env_is_refused_and_secret_refs_are_fine():
    env = [
        {"name": "MQTT_PASSWORD", "value": "hunter2"},
        {"name": "MQTT_USERNAME", "value": "ingest"},
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "DATABASE_URL"}}},
        {"name": "UPSTREAM", "value": "https://user:pw@example.com"},
    ]
    assert rules.credential_problems(DEPLOYMENT, workload({"env": env})) == [
        "env MQTT_PASSWORD of container 'api' in Deployment customer-acme/api is a credential as a literal "
        "value: use valueFrom.secretKeyRef",
        "env UPSTREAM of container 'api' in Deployment customer-acme/api is a URL with a password as a "
        "literal value: use valueFrom.secretKeyRef",
    ]


# --- images -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("docker.io/iotistic/api:1.4.2", None),
        ("postgres:15-alpine", None),
        ("registry:5000/iotistic/api@sha256:" + "a" * 64, None),
        ("docker.io/iotistic/api:latest", "latest"),
        ("registry:5000/iotistic/api", "untagged"),
        ("nginx", "untagged"),
    ],
)
def test_image_tags(image, problem):
    assert rules.image_problem(image) == problem


def ns(name: str = "customer-acme", plan: str = "starter", environment: str = "development", **extra):
    labels = {"customer-id": name.removeprefix("customer-"), "iotistic.io/plan": plan}
    labels["iotistic.io/environment"] = environment
    return rules.Resource(
        rules.NAMESPACE,
        "namespace",
        {"metadata": {"name": name, "labels": labels}},
        "urn:ns",
        "urn:ci",
        **extra,
    )


def test_latest_images_are_reported_with_the_container_and_the_production_flag_comes_from_the_namespace():
    api = rules.Resource(DEPLOYMENT, "api", workload({"image": "iotistic/api:latest"}), "urn:api")
    assert rules.image_tag_problems([ns(), api]) == [
        ("urn:api", "image iotistic/api:latest of container 'api' in Deployment customer-acme/api is tagged "
         "'latest': pin a version")
    ]  # fmt: skip
    assert not rules.is_production([ns(), api])
    assert rules.is_production([ns(environment="production"), api])


# --- stack rules ------------------------------------------------------------------------------------
def guarded(namespace: str = "customer-acme") -> list[rules.Resource]:
    meta = {"namespace": namespace}
    deny = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    return [
        rules.Resource(rules.RESOURCE_QUOTA, "quota", {"metadata": meta, "spec": {}}, "urn:q", "urn:ci"),
        rules.Resource(rules.LIMIT_RANGE, "limits", {"metadata": meta, "spec": {}}, "urn:l", "urn:ci"),
        rules.Resource(rules.NETWORK_POLICY, "deny", {"metadata": meta, "spec": deny}, "urn:n", "urn:ci"),
    ]


def test_a_customer_namespace_with_quota_limits_and_default_deny_passes():
    assert rules.namespace_guardrail_problems([ns(), *guarded()]) == []


def test_each_missing_guardrail_is_named():
    allow_all = rules.Resource(
        rules.NETWORK_POLICY,
        "allow",
        {"metadata": {"namespace": "customer-acme"}, "spec": {"podSelector": {}, "ingress": [{}]}},
        "urn:a",
    )
    assert rules.namespace_guardrail_problems([ns(), allow_all]) == [
        (
            "urn:ns",
            "customer namespace customer-acme has no ResourceQuota, LimitRange, default-deny NetworkPolicy "
            "(podSelector {}, policyTypes Ingress and Egress)",
        )
    ]
    # Another customer's guardrails do not count for this one.
    assert rules.namespace_guardrail_problems([ns(), *guarded("customer-globex")])


def test_guardrails_whose_namespace_is_unknown_in_preview_count_when_they_are_siblings():
    unknown = [
        rules.Resource(r.type, r.name, {**r.props, "metadata": {"namespace": UNKNOWN}}, r.urn, r.parent)
        for r in guarded()
    ]
    assert rules.namespace_guardrail_problems([ns(), *unknown]) == []


def postgres(size: str, namespace: str = "customer-acme", protect: bool = True) -> rules.Resource:
    claim = {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": size}}}}
    props = {
        "metadata": {"name": "postgres", "namespace": namespace},
        "spec": {"volumeClaimTemplates": [claim]},
    }
    return rules.Resource(rules.STATEFULSET, "postgres", props, "urn:pg", "urn:ci", protect)


@pytest.mark.parametrize("size", ["10Gi", "20Gi", "10240Mi", "0.01Ti"])
def test_a_postgres_volume_at_least_the_plans_size_passes(size):
    assert rules.postgres_volume_problems([ns(), postgres(size)]) == []


def test_a_postgres_volume_smaller_than_the_plans_size_is_refused():
    assert rules.postgres_volume_problems([ns(plan="professional"), postgres("5Gi")]) == [
        (
            "urn:pg",
            "volume data of StatefulSet customer-acme/postgres is 5Gi, smaller than the professional "
            "plan's 10Gi",
        )
    ]
    assert rules.postgres_volume_problems([ns(), postgres("ten")])[0][1].endswith(
        "is not a storage quantity (e.g. 10Gi)"
    )


def test_quantities():
    assert rules.quantity_bytes("10Gi") == 10 * 2**30
    assert rules.quantity_bytes("500M") == 500e6
    with pytest.raises(ValueError):
        rules.quantity_bytes("10 gigs")


def test_unprotected_stateful_resources_are_refused_unless_overridden():
    bare = ns(protect=False)
    assert rules.stateful_protection_problems([ns(protect=True), postgres("10Gi")]) == []
    problems = rules.stateful_protection_problems([bare, postgres("10Gi", protect=False)])
    assert [urn for urn, _ in problems] == ["urn:ns", "urn:pg"]
    assert "Namespace customer-acme holds data and is not protected" in problems[0][1]
    overridden = copy.deepcopy(bare.props)
    overridden["metadata"]["annotations"] = {ALLOW_REPLACEMENT: "true"}
    assert rules.stateful_protection_problems([rules.Resource(rules.NAMESPACE, "ns", overridden)]) == []
    # A Deployment holds no data: no protection needed.
    assert rules.stateful_protection_problems([rules.Resource(DEPLOYMENT, "api", workload())]) == []


# --- the pack's policies around the rules -------------------------------------------------------
def policy(name: str):
    return next(p for p in pack.POLICIES if p.name == name)


def as_policy_resource(r: rules.Resource) -> PolicyResource:
    opts = PolicyResourceOptions(r.protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], r.parent)
    return PolicyResource(r.type, r.props, r.urn, r.name, opts, None, None, [], {})


def run_stack_policy(name: str, resources: list[rules.Resource]) -> list[tuple[str, str | None]]:
    reported: list[tuple[str, str | None]] = []
    args = StackValidationArgs([as_policy_resource(r) for r in resources])
    try:
        policy(name).validate(args, lambda message, urn=None: reported.append((message, urn)))
    except Exception as e:  # not_applicable raises
        if type(e).__name__ != "_NotApplicableError":
            raise
        return [("not applicable", None)]
    return reported


def test_the_image_rule_is_advisory_outside_production_and_mandatory_in_it():
    api = rules.Resource(DEPLOYMENT, "api", workload({"image": "iotistic/api"}), "urn:api")
    assert policy("image-tags").enforcement_level.value == "advisory"
    assert policy("image-tags-production").enforcement_level.value == "mandatory"
    assert run_stack_policy("image-tags", [ns(), api])[0][1] == "urn:api"
    assert run_stack_policy("image-tags-production", [ns(), api]) == [("not applicable", None)]
    prod = run_stack_policy("image-tags-production", [ns(environment="production"), api])
    assert prod == [
        (
            "image iotistic/api of container 'api' in Deployment customer-acme/api has no tag (so it is "
            "'latest'): pin a version",
            "urn:api",
        )
    ]
    assert run_stack_policy("image-tags", [ns(environment="production"), api]) == [("not applicable", None)]


def test_every_other_policy_is_mandatory():
    levels = {p.name: p.enforcement_level.value for p in pack.POLICIES}
    assert {n for n, level in levels.items() if level == "advisory"} == {"image-tags"}


# --- the real components pass every rule ------------------------------------------------------------
def rendered(build) -> list[rules.Resource]:
    mocks = install_mocks(stack="acme")
    run_program(build)
    return [
        rules.Resource(r.type, r.name, r.inputs, f"urn:{r.type}:{r.name}", "urn:ci") for r in mocks.resources
    ]


def test_a_customer_instance_breaks_no_rule_but_the_advisory_image_tags():
    resources = rendered(
        lambda: CustomerInstance(
            "acme",
            CustomerInstanceArgs(
                "acme",
                "ops@acme.example",
                "ACME",
                pulumi.Output.secret("jwt"),
                images=Images(api_tag="1.0.0"),
            ),
        )
    )
    for r in resources:
        assert rules.container_problems(r.type, r.props) == [], r.name
        assert rules.service_problems(r.type, r.props) == [], r.name
        assert rules.credential_problems(r.type, r.props) == [], r.name
    assert rules.namespace_guardrail_problems(resources) == []
    assert rules.postgres_volume_problems(resources) == []
    tagged = {msg.split()[1] for _, msg in rules.image_tag_problems(resources)}
    assert tagged == {"docker.io/iotistic/admin:latest", "docker.io/iotistic/billing-exporter:latest"}


def test_the_platform_stack_breaks_no_mandatory_rule():
    resources = rendered(
        lambda: BillingPlatform(
            "billing",
            BillingPlatformArgs(
                stripe_secret_key=pulumi.Output.secret("sk"),
                stripe_webhook_secret=pulumi.Output.secret("wh"),
                license_signing_key=pulumi.Output.secret("pem"),
                storage=Storage(storage_class="standard"),
            ),
        )
    )
    for r in resources:
        assert rules.container_problems(r.type, r.props) == [], r.name
        assert rules.credential_problems(r.type, r.props) == [], r.name


def test_stateful_children_are_protected_and_the_override_marks_them_instead():
    sts = {"metadata": {"name": "postgres"}, "spec": {"volumeClaimTemplates": [{}]}}
    args = pulumi.ResourceTransformationArgs(
        None, rules.STATEFULSET, "postgres", sts, pulumi.ResourceOptions()
    )
    assert _protect(False)(args).opts.protect is True
    overridden = _protect(True)(args)
    assert overridden.opts.protect is not True
    assert overridden.props["metadata"]["annotations"] == {ALLOW_REPLACEMENT: "true"}
    deployment = pulumi.ResourceTransformationArgs(
        None, DEPLOYMENT, "api", workload(), pulumi.ResourceOptions()
    )
    assert _protect(False)(deployment) is None


def test_the_pack_runs_in_the_project_venv_here_and_in_the_billing_image():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent.parent
    runtime = yaml.safe_load((root / "policy" / "PulumiPolicy.yaml").read_text())["runtime"]
    assert runtime["name"] == "python" and runtime["options"]["virtualenv"] == "../.venv"
    # The worker's `up` runs under the pack: the image carries it, pinned, and the venv it names.
    requirements = (root / "billing" / "requirements.txt").read_text().splitlines()
    assert "pulumi-policy==1.21.0" in requirements
    dockerfile = (root / "billing" / "Dockerfile").read_text()
    assert "COPY policy /app/policy" in dockerfile and "ln -s /opt/venv /app/.venv" in dockerfile


def test_production_is_stack_config_written_from_iotistic_environment_and_labels_the_namespace(monkeypatch):
    from automation.provision import tenant_config
    from tenancy.schema import Tenant

    tenant = Tenant("acme", "ops@acme.example", "ACME")
    assert "iotistic:environment" not in tenant_config(tenant, "jwt", None, "tenants.yaml")
    monkeypatch.setenv("IOTISTIC_ENVIRONMENT", "production")
    assert tenant_config(tenant, "jwt", None, "tenants.yaml")["iotistic:environment"].value == "production"

    resources = rendered(
        lambda: CustomerInstance(
            "acme",
            CustomerInstanceArgs(
                "acme", "ops@acme.example", "ACME", pulumi.Output.secret("jwt"), environment="production"
            ),
        )
    )
    assert rules.is_production(resources)
    assert rules.image_tag_problems(resources)  # `latest` images: refused by image-tags-production
