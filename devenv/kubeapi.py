"""A small client for the local API server: plain HTTPS + JSON with a client certificate."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# (apiVersion, kind) -> (resource, namespaced): the kinds devenv applies itself.
RESOURCES = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Service"): ("services", True),
    ("v1", "Pod"): ("pods", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("storage.k8s.io/v1", "StorageClass"): ("storageclasses", False),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("endpointslices", True),
}


def object_path(obj: dict, resources: Mapping[tuple[str, str], tuple[str, bool]] = RESOURCES) -> str:
    """The API path of `obj` (apiVersion, kind, metadata.name and namespace); `resources` maps
    (apiVersion, kind) to (resource name, namespaced): the kinds this project writes by default."""
    version, kind = obj["apiVersion"], obj["kind"]
    resource, namespaced = resources[(version, kind)]
    base = "/api/v1" if version == "v1" else f"/apis/{version}"
    meta = obj["metadata"]
    ns = f"/namespaces/{meta['namespace']}" if namespaced else ""
    return f"{base}{ns}/{resource}/{meta['name']}"


class KubeAPIError(RuntimeError):
    """The API server answered with an error status; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass
class KubeAPI:
    """Plain HTTPS + JSON against one API server, authenticated by a client certificate."""

    port: int
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    timeout: float = 10.0

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if self.cert and self.key:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def request(
        self, method: str, path: str, body: object = None, content_type: str = "application/json"
    ) -> dict:
        """Send one request; the decoded JSON answer, or KubeAPIError for an error status."""
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self._context(), timeout=self.timeout
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                message = json.loads(raw).get("message", raw)
            except ValueError:
                message = raw
            raise KubeAPIError(resp.status, message)
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {"text": raw}

    def get(self, path: str) -> dict | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return self.request("GET", path)
        except KubeAPIError as e:
            if e.status == 404:
                return None
            raise

    def ensure(self, collection: str, obj: dict) -> None:
        """Create `obj` in `collection` unless an object of that name is already there."""
        try:
            self.request("POST", collection, obj)
        except KubeAPIError as e:
            if e.status != 409:
                raise

    def apply(self, obj: dict, field_manager: str) -> dict:
        """Server-side apply of `obj` (created or brought to this content; our fields win)."""
        query = f"?fieldManager={quote(field_manager)}&force=true"
        return self.request("PATCH", object_path(obj) + query, obj, "application/apply-patch+yaml")

    def delete(self, path: str) -> None:
        """Delete the object at `path`; already gone is fine."""
        try:
            self.request("DELETE", path)
        except KubeAPIError as e:
            if e.status != 404:
                raise

    def healthy(self, path: str = "/readyz") -> bool:
        """True when the health endpoint answers 200 (False while the server is not up)."""
        try:
            self.request("GET", path)
            return True
        except (OSError, KubeAPIError, http.client.HTTPException):
            return False
