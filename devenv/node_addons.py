"""The cluster objects the real node's add-ons need, applied with server-side apply.

- RBAC for the node's programs, each with its own client certificate (devenv/node.py): kubelet
  is `system:node:<name>` (Node authorizer, NodeRestriction), kube-proxy `system:kube-proxy`
  (the built-in `system:node-proxier` binding), kube-router and local-path-provisioner their own
  users bound to the roles their upstream manifests grant;
- CoreDNS: cluster DNS for the node's pods (Deployment + `kube-dns` Service at 10.96.0.10), so the
  API reaches `postgres` and `mosquitto` by Service name as in production;
- local-path-provisioner's namespace, helper service account, ConfigMap and the `local-path`
  StorageClass (WaitForFirstConsumer: the volume is made on the node the pod lands on);
- the `kubernetes` Service's endpoint: the bridge's address inside the node, so pods reach the
  API server through 10.96.0.1 like in any cluster.
"""

from __future__ import annotations

import ipaddress
import json

from components.placement import REAL_NODE_LABEL, REAL_NODE_TAINT, REAL_NODE_VALUE
from devenv.kubeapi import KubeAPI

FIELD_MANAGER = "iotistic-devenv"
DNS_IMAGE = "iotistic.local/coredns:local"
HELPER_IMAGE = "iotistic.local/toolbox:local"
LOCAL_PATH_NAMESPACE = "local-path-storage"
LOCAL_PATH_PROVISIONER = "rancher.io/local-path"
LOCAL_PATH_CLASS = "local-path"
KUBE_ROUTER_USER = "iotistic:kube-router"
LOCAL_PATH_USER = "iotistic:local-path-provisioner"
APISERVER_KUBELET_USER = "kube-apiserver-kubelet-client"
CLUSTER_DOMAIN = "cluster.local"

ON_REAL_NODE = {
    "nodeSelector": {REAL_NODE_LABEL: REAL_NODE_VALUE},
    "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
}


def dns_service_ip(service_cidr: str) -> str:
    """The tenth address of the service range (10.96.0.10), where kubelet points pods' DNS."""
    return str(ipaddress.ip_network(service_cidr)[10])


def _cluster_role(name: str, rules: list[dict]) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def _cluster_binding(name: str, role: str, subject: dict) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }


def _user(name: str) -> dict:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def _sa(name: str, namespace: str) -> dict:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


READ = ["get", "list", "watch"]


def control_plane_objects() -> list[dict]:
    """What any cluster of ours needs: the API server may call kubelets (logs, exec, port-forward)."""
    return [
        _cluster_binding(
            "iotistic:apiserver-kubelet-client", "system:kubelet-api-admin", _user(APISERVER_KUBELET_USER)
        )
    ]


def kube_router_objects() -> list[dict]:
    role = "iotistic:kube-router"
    return [
        _cluster_role(
            role,
            [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                    "verbs": READ,
                },
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
            ],
        ),
        _cluster_binding(role, role, _user(KUBE_ROUTER_USER)),
    ]


LOCAL_PATH_HELPER = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "helper-pod"},
    "spec": {
        "priorityClassName": "system-node-critical",
        "tolerations": [
            {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
            *ON_REAL_NODE["tolerations"],
        ],
        "containers": [{"name": "helper-pod", "image": HELPER_IMAGE, "imagePullPolicy": "Never"}],
    },
}


def local_path_objects(volumes_dir: str) -> list[dict]:
    ns = LOCAL_PATH_NAMESPACE
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [volumes_dir]}]}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "local-path-provisioner", "namespace": ns},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "local-path-provisioner", "namespace": ns},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods"],
                    "verbs": [*READ, "create", "patch", "update", "delete"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "local-path-provisioner", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "local-path-provisioner",
            },
            "subjects": [_user(LOCAL_PATH_USER)],
        },
        _cluster_role(
            "iotistic:local-path-provisioner",
            [
                {
                    "apiGroups": [""],
                    "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"],
                    "verbs": READ,
                },
                {
                    "apiGroups": [""],
                    "resources": ["persistentvolumes"],
                    "verbs": [*READ, "create", "patch", "update", "delete"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": READ},
            ],
        ),
        _cluster_binding(
            "iotistic:local-path-provisioner", "iotistic:local-path-provisioner", _user(LOCAL_PATH_USER)
        ),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-path-config", "namespace": ns},
            "data": {
                "config.json": json.dumps(config, indent=2),
                "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
                "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
                "helperPod.yaml": json.dumps(LOCAL_PATH_HELPER, indent=2),
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": LOCAL_PATH_CLASS},
            "provisioner": LOCAL_PATH_PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
    ]


COREFILE = f"""\
.:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
}}
"""


def dns_objects(service_cidr: str) -> list[dict]:
    ns = "kube-system"
    labels = {"k8s-app": "kube-dns"}
    container = {
        "name": "coredns",
        "image": DNS_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": 8080},
            "periodSeconds": 10,
            "failureThreshold": 5,
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}},
        _cluster_role(
            "iotistic:coredns",
            [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        ),
        _cluster_binding("iotistic:coredns", "iotistic:coredns", _sa("coredns", ns)),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": ns},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        **ON_REAL_NODE,
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        # Port 53 without any capability: the one sysctl this needs is namespaced.
                        "securityContext": {
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}]
                        },
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": dns_service_ip(service_cidr),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]


def kubernetes_endpoint(node_ip: str, port: int) -> dict:
    """The `kubernetes` Service's endpoint: the bridge's listener inside the node."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes-real-node",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "iotistic-devenv",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [node_ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }


def apply_all(api: KubeAPI, objects: list[dict]) -> None:
    for obj in objects:
        api.apply(obj, FIELD_MANAGER)
