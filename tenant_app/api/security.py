"""Sign-in for every `/api` route: authenticate the caller, then check the route's permission.

Public: `/health` (probes) and `/api/openapi.json` (the API's description, no data). Everything
else under `/api` (including paths that match no route, so they reveal nothing) needs a
credential: 401 without one, 403 when the role does not allow the route.
"""

from __future__ import annotations

from flask import Flask, g, request

from tenant_app import auth, services
from tenant_app.api.context import instance

PUBLIC_ENDPOINTS = frozenset({"health.health", "api-docs.openapi_json"})
# Routes needing something else than their method implies (GET reads, anything else writes).
PERMISSIONS = {
    "telemetry.ingest": auth.INGEST,
    "keys.list_keys": auth.ADMIN,
    "keys.create_key": auth.ADMIN,
    "keys.revoke_key": auth.ADMIN,
}


def needs_credential(path: str, endpoint: str | None) -> bool:
    return endpoint not in PUBLIC_ENDPOINTS and (path == "/api" or path.startswith("/api/"))


def register(app: Flask) -> None:
    @app.before_request
    def sign_in() -> None:
        if not needs_credential(request.path, request.endpoint):
            return
        credential = auth.parse_authorization(request.headers.get("Authorization"))
        principal = services.authenticate(instance(), credential)
        permission = PERMISSIONS.get(request.endpoint or "", auth.permission_for(request.method))
        auth.authorize(principal, permission)
        g.principal = principal


def principal() -> auth.Principal:
    """The caller of the current request (set by the sign-in hook)."""
    return g.principal
