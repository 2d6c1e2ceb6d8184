"""A suspended instance keeps everything but runs nothing: every workload at zero replicas."""

from __future__ import annotations

from tests.pulumi_mocks import acme_instance, install_mocks, run_program

WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")


def instance(suspended: bool):
    mocks = install_mocks(stack="acme")

    def program():
        acme_instance(suspended=suspended)

    run_program(program)
    return mocks


def test_suspension_scales_every_workload_to_zero_and_keeps_the_rest():
    running, suspended = instance(False), instance(True)
    replicas = {r.name: r.inputs["spec"]["replicas"] for t in WORKLOADS for r in suspended.of_type(t)}
    assert replicas == {"api": 0, "dashboard": 0, "billing-exporter": 0, "mosquitto": 0, "postgres": 0}
    assert {r.inputs["spec"]["replicas"] for t in WORKLOADS for r in running.of_type(t)} == {1}
    # Same objects otherwise: volumes, Secrets, namespace, policies stay.
    assert sorted((r.type, r.name) for r in suspended.resources) == sorted(
        (r.type, r.name) for r in running.resources
    )
