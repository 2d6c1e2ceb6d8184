"""The dashboard (admin panel, port 80): one page, its own JS/CSS, no CDN.

The customer signs in with their billing account: the page POSTs email and password to this
server's `/login`, which forwards them to the billing service (BILLING_URL + /api/customers/login)
and hands back only the short-lived access token (15 minutes). The page keeps it in
sessionStorage (gone with the tab) and sends it as `Authorization: Bearer` on every API call;
when it expires the page asks to sign in again. No long-lived secret ever reaches the browser.

`/api/...` GETs are forwarded to the API service (API_URL) with that header, for local runs where
the page and the API do not share an Ingress. `POST /upgrade` (admin token only) asks the billing
service for a Stripe checkout session and returns its `checkoutUrl`.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

from flask import Flask, Response, jsonify, render_template, request

from licensing import AccessToken, AccessTokenError, LicenseError, verify_access_token
from tenant_app.config import CHECKOUT_PATH, LOGIN_PATH, Settings
from tenant_app.license_state import key_source
from tenant_app.web import JsonProvider

log = logging.getLogger("tenant_app.dashboard")
PROXY_TIMEOUT = 10
PLANS_OFFERED = ("professional", "enterprise")
MAX_FIELD = 320  # characters of an email address or password sent to the login
SECURITY_HEADERS = {
    # The token lives in sessionStorage: allow no script but our own file, and no framing.
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _forward(req: urllib.request.Request) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(req, timeout=PROXY_TIMEOUT) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "application/json")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "application/json")


def _json_object(raw: bytes) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class BillingUnreachable(Exception):
    """The billing service did not answer (answered 502 by the dashboard)."""


def _post_json(url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST `body` as JSON; the status and the JSON object answered ({} when it is not one)."""
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        status, raw, _ = _forward(req)
    except (OSError, ValueError) as e:
        log.error("billing service unreachable", extra={"error": str(e)})
        raise BillingUnreachable from None
    return status, _json_object(raw)


def create_app(config: Settings | None = None) -> Flask:
    """Build the dashboard app from `config` (default: the environment; no database needed)."""
    settings = config or Settings.from_env(require_database=False)
    app = Flask(__name__)
    app.json = JsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    api_url = settings.api_url.rstrip("/")
    billing_url = settings.billing_url.rstrip("/")
    try:
        keys = key_source(settings)
    except (OSError, ValueError) as e:
        log.error("public key unusable: upgrades cannot be authorised", extra={"error": str(e)})
        keys = None

    def signed_in_admin() -> AccessToken | tuple[Response, int]:
        """The verified access token of an admin, or the error answer to return."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return jsonify(error="sign in first"), 401
        if keys is None:
            return jsonify(error="sign-in cannot be verified: no public key configured"), 503
        try:
            at = verify_access_token(
                token,
                keys,
                customer_id=settings.customer_id,
                issuer=settings.license_issuer,
                now=datetime.now(UTC),
            )
        except (AccessTokenError, LicenseError) as e:
            return jsonify(error=f"sign in again: {e}"), 401
        if not at.is_admin:
            return jsonify(error="only an admin may change the plan"), 403
        return at

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/")
    def index():
        return render_template(
            "index.html",
            customer_id=settings.customer_id,
            refresh_seconds=settings.dashboard_refresh_seconds,
            billing_configured=bool(settings.billing_url),
        )

    @app.post("/login")
    def login():
        """Forward email and password to the billing login; answer only the short-lived token."""
        if not billing_url:
            return jsonify(
                error="sign-in is unavailable: no billing service is configured (BILLING_URL)"
            ), 503
        data = request.get_json(silent=True)
        email = data.get("email") if isinstance(data, dict) else None
        password = data.get("password") if isinstance(data, dict) else None
        if not all(isinstance(v, str) and 0 < len(v) <= MAX_FIELD for v in (email, password)):
            return jsonify(error="enter your email address and password"), 400
        status, answer = _post_json(billing_url + LOGIN_PATH, {"email": email, "password": password})
        if status in (400, 401, 403):
            return jsonify(error=answer.get("error") or "wrong email or password"), 401
        token = answer.get("access_token")
        if status != 200 or not isinstance(token, str):
            return jsonify(error=f"sign-in failed: the billing service answered {status}"), 502
        if answer.get("customer_id") != settings.customer_id:
            return jsonify(error="this account belongs to another Iotistic instance"), 403
        expires_in = answer.get("expires_in")
        log.info("signed in", extra={"expires_in": expires_in})
        return jsonify(access_token=token, token_type="Bearer", expires_in=expires_in)

    @app.get("/api/<path:path>")
    def api_proxy(path: str):
        """Read-only pass-through to the API with the caller's credential (same origin, no CORS)."""
        url = f"{api_url}/api/{urllib.parse.quote(path, safe='/.-_~')}"
        if request.query_string:
            url += "?" + urllib.parse.urlencode(list(request.args.items(multi=True)))
        headers = {"Accept": "application/json"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        try:
            status, body, ctype = _forward(urllib.request.Request(url, headers=headers))
        except (OSError, ValueError) as e:
            log.error("API unreachable", extra={"url": url[:200], "error": str(e)})
            return jsonify(error="the API service is unreachable"), 502
        return Response(body, status=status, content_type=ctype)

    @app.post("/upgrade")
    def upgrade():
        """Create a checkout session at the billing service for this customer (admins only)."""
        if not billing_url:
            return jsonify(error="upgrades are unavailable: no billing service is configured"), 503
        who = signed_in_admin()
        if not isinstance(who, AccessToken):
            return who
        data = request.get_json(silent=True)
        plan = data.get("plan", "professional") if isinstance(data, dict) else "professional"
        if plan not in PLANS_OFFERED:
            return jsonify(error=f"plan must be one of {', '.join(PLANS_OFFERED)}"), 400
        body = {
            "customer_id": settings.customer_id,
            "plan": plan,
            "success_url": request.host_url + "?checkout=success",
            "cancel_url": request.host_url + "?checkout=cancelled",
        }
        status, answer = _post_json(
            billing_url + CHECKOUT_PATH, body, {"Authorization": f"Bearer {who.token}"}
        )
        checkout = answer.get("checkoutUrl") or answer.get("url")
        if status >= 400 or not isinstance(checkout, str):
            message = answer.get("error") or f"billing service answered {status}"
            return jsonify(error=f"could not start the checkout: {message}"), 502
        log.info("checkout session created", extra={"plan": plan, "by": who.subject})
        return jsonify(checkoutUrl=checkout)

    @app.errorhandler(BillingUnreachable)
    def billing_unreachable(e):
        return jsonify(error="the billing service is unreachable; try again later"), 502

    @app.errorhandler(413)
    def too_large(e):
        return jsonify(error="the body is too large"), 413

    return app
