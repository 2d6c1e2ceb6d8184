"""The billing HTTP API: `create_app(billing)` builds a Flask app with one blueprint per resource.

Handlers only parse (flask-smorest + marshmallow schemas, which also generate `/openapi.json`),
call a use case of billing/services.py and map domain errors to HTTP (billing/api/errors.py).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api

from billing.api import admin, customers, meta, subscriptions, webhooks
from billing.api.errors import register_error_handlers
from billing.api.schemas import Error
from billing.services import Billing

log = logging.getLogger("billing.api")


class BillingApi(Api):
    """flask-smorest's Api with our error shape in the generated document."""

    ERROR_SCHEMA = Error


class JsonProvider(DefaultJSONProvider):
    """ISO 8601 datetimes; never NaN in an answer."""

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def create_app(billing: Billing) -> Flask:
    """The billing API on an already built context (see billing.context.build)."""
    app = Flask("billing")
    app.json = JsonProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=billing.settings.max_body_bytes,
        API_TITLE="Iotistic billing",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
            },
            "info": {"description": "Signup, trials, RS256 licenses, Stripe subscriptions, provisioning."},
        },
    )
    app.extensions["billing"] = billing
    api = BillingApi(app)
    for bp in (customers.bp, subscriptions.bp, webhooks.bp, admin.bp, meta.bp):
        api.register_blueprint(bp)
    register_error_handlers(app)
    _request_log(app)
    return app


def _request_log(app: Flask) -> None:
    @app.before_request
    def start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response):
        if request.path != "/health":
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(
                        (time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1
                    ),
                },
            )
        return response
