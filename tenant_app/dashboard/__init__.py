"""The dashboard (admin panel, port 80): one page, its own JS/CSS, no CDN.

The page talks only to this server: `/api/...` GETs are forwarded to the API service (API_URL),
and `POST /upgrade` asks the billing service for a Stripe checkout session (BILLING_URL +
/api/subscriptions/create-checkout-session) and returns its `checkoutUrl`.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from flask import Flask, Response, jsonify, render_template, request

from tenant_app.config import CHECKOUT_PATH, Settings

log = logging.getLogger("tenant_app.dashboard")
PROXY_TIMEOUT = 10
PLANS_OFFERED = ("professional", "enterprise")


def _forward(req: urllib.request.Request) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(req, timeout=PROXY_TIMEOUT) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "application/json")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "application/json")


def create_app(config: Settings | None = None) -> Flask:
    """Build the dashboard app from `config` (default: the environment; no database needed)."""
    settings = config or Settings.from_env(require_database=False)
    app = Flask(__name__)
    api_url = settings.api_url.rstrip("/")

    @app.get("/")
    def index():
        return render_template(
            "index.html",
            customer_id=settings.customer_id,
            refresh_seconds=settings.dashboard_refresh_seconds,
            billing_configured=bool(settings.billing_url),
        )

    @app.get("/api/<path:path>")
    def api_proxy(path: str):
        """Read-only pass-through to the API (same origin for the page, no CORS needed)."""
        url = f"{api_url}/api/{path}"
        if request.query_string:
            url += "?" + request.query_string.decode()
        try:
            status, body, ctype = _forward(urllib.request.Request(url))
        except OSError as e:
            log.error("API unreachable", extra={"url": url, "error": str(e)})
            return jsonify(error="the API service is unreachable"), 502
        return Response(body, status=status, content_type=ctype)

    @app.post("/upgrade")
    def upgrade():
        """Create a checkout session at the billing service for this customer."""
        if not settings.billing_url:
            return jsonify(error="upgrades are unavailable: no billing service is configured"), 503
        data = request.get_json(silent=True) or {}
        plan = data.get("plan", "professional")
        if plan not in PLANS_OFFERED:
            return jsonify(error=f"plan must be one of {', '.join(PLANS_OFFERED)}"), 400
        body = {
            "customer_id": settings.customer_id,
            "plan": plan,
            "success_url": request.host_url + "?checkout=success",
            "cancel_url": request.host_url + "?checkout=cancelled",
        }
        req = urllib.request.Request(
            settings.billing_url.rstrip("/") + CHECKOUT_PATH,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            status, raw, _ = _forward(req)
        except OSError as e:
            log.error("billing service unreachable", extra={"error": str(e)})
            return jsonify(error="the billing service is unreachable; try again later"), 502
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        checkout = answer.get("checkoutUrl") or answer.get("url")
        if status >= 400 or not checkout:
            message = answer.get("error") or f"billing service answered {status}"
            return jsonify(error=f"could not start the checkout: {message}"), 502
        log.info("checkout session created", extra={"plan": plan})
        return jsonify(checkoutUrl=checkout)

    return app
