"""Every error billing answers is JSON `{"error": "...", "field"?: "..."}` with a 4xx/5xx status."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from billing.api.parsing import flatten_messages
from billing.domain import (
    Conflict,
    DomainError,
    EmailTaken,
    Forbidden,
    InvalidCredentials,
    NotFound,
    PaymentsUnavailable,
    Unauthorized,
    ValidationFailed,
)

log = logging.getLogger(__name__)

STATUS = {
    ValidationFailed: 400,
    Unauthorized: 401,
    InvalidCredentials: 401,
    Forbidden: 403,
    NotFound: 404,
    EmailTaken: 409,
    Conflict: 409,
    PaymentsUnavailable: 502,
}


def register_error_handlers(app: Flask) -> None:
    """Installed after flask-smorest's own, so every answer has the same shape."""

    @app.errorhandler(DomainError)
    def domain_error(e: DomainError):
        status = next((code for cls, code in STATUS.items() if isinstance(e, cls)), 400)
        body = {"error": e.message, **{k: v for k, v in e.details.items() if isinstance(v, str)}}
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return jsonify(body), status, headers

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        messages = (getattr(e, "data", None) or {}).get("messages")
        if messages:
            problems = flatten_messages(messages)
            field, text = problems[0]
            body = {"error": f"'{field}': {text}" if field else text}
            if field:
                body["field"] = field
            return jsonify(body), e.code or 400
        return jsonify(error=e.description or e.name), e.code or 500

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unhandled error")
        return jsonify(error="internal error; see the billing service's logs"), 500
