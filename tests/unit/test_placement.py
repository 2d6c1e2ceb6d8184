"""Placement on the real node: what it changes in the instance's pods, and what it leaves alone.

Under Pulumi mocks; the same component runs for real on the real node in tests/node/.
"""

from __future__ import annotations

import pytest

from components.args import Placement, Storage
from components.placement import LOCAL_IMAGES, LOCAL_STORAGE_CLASS, REAL_NODE_LABEL, REAL_NODE_TAINT
from tenancy.schema import TenantsFileError, parse_tenants
from tests.pulumi_mocks import acme_instance, install_mocks, run_program

WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"


def deploy(**args):
    mocks = install_mocks(stack="acme")

    def program():
        acme_instance(**args)

    run_program(program)
    return [r for r in mocks.resources if r.type in WORKLOADS]


def pod_specs(workloads) -> dict[str, dict]:
    return {w.inputs["metadata"]["name"]: w.inputs["spec"]["template"]["spec"] for w in workloads}


def test_a_real_instance_runs_every_pod_on_the_real_node_with_local_images():
    specs = pod_specs(deploy(placement=Placement("real"), images=LOCAL_IMAGES))
    assert sorted(specs) == ["api", "billing-exporter", "dashboard", "mosquitto", "postgres"]
    for name, spec in specs.items():
        assert spec["nodeSelector"] == {REAL_NODE_LABEL: "real"}, name
        assert {"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        containers = spec["containers"] + spec.get("initContainers", [])
        for c in containers:
            assert c["imagePullPolicy"] == "Never", (name, c["name"])
            assert c["image"].startswith("iotistic.local/"), (name, c["image"])
        # Pod security stays restricted: placement adds no privilege.
        assert spec["securityContext"]["runAsNonRoot"] is True


def test_an_instance_not_placed_is_declared_exactly_as_before():
    for name, spec in pod_specs(deploy()).items():
        assert "nodeSelector" not in spec and "tolerations" not in spec, name
        for c in spec["containers"]:
            assert "imagePullPolicy" not in c, (name, c["name"])


def test_a_pinned_license_key_reaches_the_services_that_verify_the_license():
    specs = pod_specs(deploy(license_public_key=PUBLIC_KEY))

    def env(container):
        return {e["name"]: e.get("value") for e in container.get("env", [])}

    api = specs["api"]["containers"]
    assert all(env(c)["LICENSE_PUBLIC_KEY"] == PUBLIC_KEY for c in api)  # API and consumer
    assert env(specs["billing-exporter"]["containers"][0])["LICENSE_PUBLIC_KEY"] == PUBLIC_KEY
    assert "LICENSE_PUBLIC_KEY" not in env(pod_specs(deploy())["api"]["containers"][0])


TENANTS = """\
defaults:
  storage: {storage_class: standard}
tenants:
  - id: real-one
    email: ops@real.example
    company: Real
    overrides:
      placement: {node: real}
  - id: real-pinned
    email: ops@real.example
    company: Real
    overrides:
      placement: {node: real}
      images: {api_tag: "1.2.3"}
      storage: {storage_class: fast}
  - id: simulated
    email: ops@sim.example
    company: Sim
"""


def test_placing_a_tenant_on_the_real_node_brings_local_images_and_volumes():
    real, pinned, simulated = parse_tenants(TENANTS)
    assert real.placement().real
    assert real.images() == LOCAL_IMAGES
    # The placement's defaults win over the file's defaults...
    assert real.storage() == Storage(storage_class=LOCAL_STORAGE_CLASS)
    # ...and the tenant's own overrides win over the placement's.
    assert pinned.images().api_tag == "1.2.3" and pinned.images().postgres == LOCAL_IMAGES.postgres
    assert pinned.storage().storage_class == "fast"
    # Everyone else stays where they were: simulated nodes, registry images, the file's class.
    assert not simulated.placement().real
    assert simulated.images().registry == "docker.io"
    assert simulated.storage().storage_class == "standard"


def test_an_unknown_node_is_a_validation_error_with_its_line():
    text = (
        "tenants:\n  - id: acme\n    email: a@b.example\n    company: A\n"
        "    overrides: {placement: {node: gpu}}\n"
    )
    with pytest.raises(TenantsFileError) as err:
        parse_tenants(text)
    assert err.value.problems == [
        "line 2: tenant 'acme': overrides.placement.node must be one of any, real, not 'gpu'"
    ]


def test_no_pod_gets_docker_link_variables_that_would_clobber_its_settings():
    """The Service `api` would put API_PORT=tcp://... into every pod (the dashboard crashed on it)."""
    for name, spec in pod_specs(deploy()).items():
        assert spec["enableServiceLinks"] is False, name
