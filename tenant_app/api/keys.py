"""`/api/keys`: instance API keys for scripts (admin only); the key itself is shown once."""

from __future__ import annotations

from tenant_app import services
from tenant_app.api import schemas
from tenant_app.api.context import instance
from tenant_app.api.http import Blueprint

bp = Blueprint("keys", __name__, url_prefix="/api/keys", description="API keys for scripts")


@bp.get("")
@bp.response(200, schemas.ApiKeyList)
def list_keys():
    """Every key, revoked ones included (never the secret)."""
    return {"keys": services.list_api_keys(instance())}


@bp.post("")
@bp.arguments(schemas.ApiKeyCreate)
@bp.response(201, schemas.ApiKeyCreated)
def create_key(body: dict):
    """Create a key with role `admin` or `read`; use it as `Authorization: Bearer <secret>`."""
    key, secret = services.create_api_key(instance(), body["name"], body["role"])
    return {"key": key, "secret": secret}


@bp.delete("/<row_id:key_id>")
@bp.response(200, schemas.ApiKeyOne)
def revoke_key(key_id: int):
    """Revoke a key at once (it stays listed, with `revoked_at`)."""
    return {"key": services.revoke_api_key(instance(), key_id)}
