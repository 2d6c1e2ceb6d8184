"""The one shape every workload of an instance shares: container, probes, security, Service.

Each workload module describes only what is its own (image, port, env, sizes, probe kind);
ports, probe timings, pod security and labels are written here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

MANAGED_BY = {"managed-by": "iotistic"}
# pulumi-kubernetes waits a fixed 10 s after every Endpoints change before it calls a Service ready.
# The Deployment or StatefulSet behind each Service is awaited until its pods are Ready, which is
# what that wait would confirm, so the Services skip it: ~10 s off every deploy.
SERVICE_ANNOTATIONS = {"pulumi.com/skipAwait": "true"}


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one container."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def spec(self) -> dict:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def http_probe(path: str, port: int | str) -> dict:
    return {"httpGet": {"path": path, "port": port}}


def tcp_probe(port: int | str) -> dict:
    return {"tcpSocket": {"port": port}}


def exec_probe(*command: str) -> dict:
    return {"exec": {"command": list(command)}}


def probes(check: dict) -> dict:
    """Readiness and liveness from one check: ready fast, restarted only after a sustained failure."""
    return {
        "readinessProbe": {**check, "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**check, "initialDelaySeconds": 30, "periodSeconds": 20, "failureThreshold": 6},
    }


# Every container satisfies the "restricted" Pod Security Standard the namespace enforces.
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def app_labels(app: str, customer_id: str) -> dict[str, str]:
    """Labels of every object of a workload; platform workloads (no customer) omit customer-id."""
    labels = {"app": app, **MANAGED_BY}
    if customer_id:
        labels["customer-id"] = customer_id
    return labels


def container(
    name: str,
    image: str,
    ports: dict[str, int],
    resources: Resources,
    check: dict | None,
    *,
    env: list[dict] | None = None,
    volume_mounts: list[dict] | None = None,
    run_as_user: int | None = None,
    command: list[str] | None = None,
) -> dict:
    """A container spec with named ports, probes, resources and the restricted security context.

    `check=None` is for containers without a port to probe (init steps, the MQTT consumer).
    """
    security = dict(CONTAINER_SECURITY)
    if run_as_user is not None:
        security["runAsUser"] = run_as_user
    spec: dict = {
        "name": name,
        "image": image,
        "resources": resources.spec(),
        "securityContext": security,
        **(probes(check) if check else {}),
    }
    if ports:
        spec["ports"] = [{"name": port_name, "containerPort": port} for port_name, port in ports.items()]
    if command:
        spec["command"] = command
    if env:
        spec["env"] = env
    if volume_mounts:
        spec["volumeMounts"] = volume_mounts
    return spec


def pod_template(
    app: str,
    customer_id: str,
    containers: list[dict],
    *,
    volumes: list[dict] | None = None,
    annotations: pulumi.Input[dict] | None = None,
    fs_group: int | None = None,
    service_account: pulumi.Input[str] | None = None,
    init_containers: list[dict] | None = None,
) -> dict:
    pod_security: dict = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group is not None:
        pod_security["fsGroup"] = fs_group
    spec: dict = {
        # Only a pod given a service account (the billing deployer) may talk to the Kubernetes API.
        "automountServiceAccountToken": service_account is not None,
        # No Docker-link variables: the Service `api` would set API_PORT=tcp://... in every pod,
        # clobbering the services' own API_PORT setting. Services are found by DNS name.
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": containers,
    }
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    if init_containers:
        spec["initContainers"] = init_containers
    if volumes:
        spec["volumes"] = volumes
    metadata: dict = {"labels": app_labels(app, customer_id)}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec}


def service(
    app: str,
    namespace: pulumi.Input[str],
    customer_id: str,
    ports: dict[str, int],
    opts: pulumi.ResourceOptions,
) -> k8s.core.v1.Service:
    """A ClusterIP Service named after the app, one port per named container port."""
    return k8s.core.v1.Service(
        app,
        metadata={
            "name": app,
            "namespace": namespace,
            "labels": app_labels(app, customer_id),
            "annotations": dict(SERVICE_ANNOTATIONS),
        },
        spec={
            "type": "ClusterIP",
            "selector": {"app": app},
            "ports": [{"name": n, "port": p, "targetPort": n} for n, p in ports.items()],
        },
        opts=opts,
    )


def deployment_with_service(
    app: str,
    namespace: pulumi.Input[str],
    customer_id: str,
    main: dict,
    opts: pulumi.ResourceOptions,
    *,
    service_ports: dict[str, int],
    volumes: list[dict] | None = None,
    annotations: pulumi.Input[dict] | None = None,
    strategy: dict | None = None,
    fs_group: int | None = None,
    service_account: pulumi.Input[str] | None = None,
    sidecars: list[dict] | None = None,
    init_containers: list[dict] | None = None,
) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service]:
    """One-replica Deployment of `main` and its Service: the shape of every workload but Postgres."""
    spec: dict = {
        "replicas": 1,
        "selector": {"matchLabels": {"app": app}},
        "template": pod_template(
            app,
            customer_id,
            [main, *(sidecars or [])],
            volumes=volumes,
            annotations=annotations,
            fs_group=fs_group,
            service_account=service_account,
            init_containers=init_containers,
        ),
    }
    if strategy:
        spec["strategy"] = strategy
    deployment = k8s.apps.v1.Deployment(
        app,
        metadata={"name": app, "namespace": namespace, "labels": app_labels(app, customer_id)},
        spec=spec,
        opts=opts,
    )
    return deployment, service(app, namespace, customer_id, service_ports, opts)
