"""The customer's own PostgreSQL: a one-replica StatefulSet with a 10Gi volume, and its Service."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.args import Storage
from components.secrets import SECRET_NAME
from components.workload import Resources, app_labels, container, exec_probe, pod_template, service

APP = "postgres"
PORT = 5432
POSTGRES_UID = 70  # the postgres user of the alpine image
RESOURCES = Resources(cpu_request="250m", cpu_limit="1", memory_request="256Mi", memory_limit="1Gi")
PGDATA = "/var/lib/postgresql/data"


def postgres(
    namespace: pulumi.Input[str],
    customer_id: str,
    image: str,
    storage: Storage,
    opts: pulumi.ResourceOptions,
    secret_name: str = SECRET_NAME,
) -> tuple[k8s.apps.v1.StatefulSet, k8s.core.v1.Service]:
    """Postgres reading POSTGRES_USER/PASSWORD/DB from `secret_name`."""
    env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
        for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    ] + [{"name": "PGDATA", "value": f"{PGDATA}/pgdata"}]
    main = container(
        APP,
        image,
        {"postgres": PORT},
        RESOURCES,
        exec_probe("pg_isready", "-U", "postgres", "-h", "127.0.0.1", "-p", str(PORT)),
        env=env,
        volume_mounts=[{"name": "data", "mountPath": PGDATA}],
        run_as_user=POSTGRES_UID,
    )
    claim_spec: dict = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.postgres_size}},
    }
    if storage.storage_class:
        claim_spec["storageClassName"] = storage.storage_class
    svc = service(APP, namespace, customer_id, {"postgres": PORT}, opts)
    statefulset = k8s.apps.v1.StatefulSet(
        APP,
        metadata={"name": APP, "namespace": namespace, "labels": app_labels(APP, customer_id)},
        spec={
            "serviceName": APP,
            "replicas": 1,
            "selector": {"matchLabels": {"app": APP}},
            "template": pod_template(APP, customer_id, [main], fs_group=POSTGRES_UID),
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim_spec}],
            # Keep the data if only the StatefulSet goes; removing the tenant removes its namespace.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        },
        # The governing Service exists before the pods that need its DNS names.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[svc])),
    )
    return statefulset, svc
