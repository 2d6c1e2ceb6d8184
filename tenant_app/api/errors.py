"""Every error the API answers is JSON: `{"error": "..."}` with a 4xx/5xx status."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from tenant_app.license_state import LicenseDenied

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raise from a handler to answer `status` with `{"error": message}` (plus any `extra` fields)."""

    def __init__(self, status: int, message: str, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(e: ApiError):
        return jsonify(error=e.message, **e.extra), e.status

    @app.errorhandler(LicenseDenied)
    def license_denied(e: LicenseDenied):
        return jsonify(error=e.message), e.status

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return jsonify(error=e.description or e.name), e.code or 500

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unhandled error")
        return jsonify(error="internal error; see the API logs"), 500
