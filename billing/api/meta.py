"""The public key set (`/.well-known/jwks.json`) and the health check."""

from __future__ import annotations

from billing.api.context import billing
from billing.api.parsing import ApiBlueprint
from billing.api.schemas import Health, Jwks

bp = ApiBlueprint("meta", __name__, description="Keys and health")


@bp.get("/.well-known/jwks.json")
@bp.response(200, Jwks)
def jwks():
    """The public keys of every key that signed a license or token still valid (by `kid`)."""
    return billing().keys.jwks()


@bp.get("/health")
@bp.response(200, Health)
@bp.alt_response(503, schema=Health)
def health():
    """200 while the database answers."""
    try:
        with billing().pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception:
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok", "database": "ok"}
