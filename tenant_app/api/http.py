"""The HTTP edge of the API: strict JSON in and out, input guards, and one error format.

Every error is `{"error": "...", "details"?: {...}}` with its status: validation 400 (webargs'
default 422 is changed here), credentials 401, role or license 402/403, over-size bodies 413. The
domain errors of `tenant_app.errors` map to their status in one table.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_to_bytes

import flask_smorest
import marshmallow as ma
from flask import Flask, Request, current_app, jsonify, request
from webargs import core
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

from tenant_app import errors, jsonsafe
from tenant_app.license_state import LicenseDenied

log = logging.getLogger("tenant_app.api")

STATUS = {
    errors.InvalidInput: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.UnknownDevices: 422,
    errors.BrokerFailed: 502,
    errors.Unavailable: 503,
}


class ApiError(Exception):
    """Raise from a handler to answer `status` with `{"error": message}` (plus any `extra` fields)."""

    def __init__(self, status: int, message: str, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def require_json(req: Request) -> None:
    if not req.is_json:
        raise ApiError(415, "send a JSON body with Content-Type: application/json")


def read_body(req: Request) -> bytes:
    """The body, 413 when over MAX_CONTENT_LENGTH, also for chunked bodies that Werkzeug would cut
    silently at the limit (their length is not known in advance)."""
    data = req.get_data(cache=True)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and req.content_length is None and len(data) >= limit:
        req.stream.read(1)  # raises RequestEntityTooLarge when the body goes on past the limit
    return data


def json_body() -> object:
    """The request's JSON body, parsed strictly (400 naming what is wrong, 415 if not JSON)."""
    require_json(request)
    data = read_body(request)
    if not data:
        raise ApiError(400, "the body is empty: send a JSON document")
    return jsonsafe.loads(data)


class StrictParser(FlaskParser):
    """webargs, answering 400 (not 422) and reading JSON through `jsonsafe`."""

    DEFAULT_VALIDATION_STATUS = 400
    # Unknown query parameters are errors too (webargs ignores them by default).
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": ma.RAISE,
        "querystring": ma.RAISE,
    }

    def _raw_load_json(self, req: Request):
        require_json(req)
        data = read_body(req)
        if not data:
            return core.missing
        return jsonsafe.loads(data)


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint using the strict parser."""

    ARGUMENTS_PARSER = StrictParser()


def _flatten(messages, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            name = key if key not in ("json", "query", "querystring", "view_args") else ""
            out += _flatten(value, f"{prefix}.{name}".strip(".") if name else prefix)
        return out
    if isinstance(messages, list | tuple):
        out = []
        for m in messages:
            out += _flatten(m, prefix) if isinstance(m, dict | list) else [f"{prefix or 'body'}: {m}"]
        return out
    return [f"{prefix or 'body'}: {messages}"]


def register_error_handlers(app: Flask) -> None:
    """One JSON error format for every failure (registered after flask-smorest's own handler)."""

    @app.errorhandler(ApiError)
    def api_error(e: ApiError):
        return jsonify(error=e.message, **e.extra), e.status

    @app.errorhandler(LicenseDenied)
    def license_denied(e: LicenseDenied):
        return jsonify(error=e.message), e.status

    @app.errorhandler(errors.DomainError)
    def domain_error(e: errors.DomainError):
        status = next((code for cls, code in STATUS.items() if isinstance(e, cls)), 500)
        headers = {"WWW-Authenticate": 'Bearer realm="iotistic"'} if status == 401 else {}
        return jsonify(error=e.message), status, headers

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        data = getattr(e, "data", None) or {}
        messages = data.get("messages")
        code = e.code or 500
        if messages is not None:  # webargs validation
            body = {"error": "invalid request: " + "; ".join(_flatten(messages)), "details": messages}
        elif code == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            body = {"error": f"the body is larger than the {limit}-byte limit"}
        else:
            body = {"error": e.description or e.name}
        headers = dict(data.get("headers") or {})
        if getattr(e, "valid_methods", None):
            headers["Allow"] = ", ".join(e.valid_methods)
        return jsonify(body), code, headers

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unhandled error", extra={"path": jsonsafe.printable(request.path)})
        return jsonify(error="internal error; see the API logs"), 500


def guard_request_text() -> None:
    """400 for broken UTF-8, a NUL byte or a lone surrogate anywhere in the path or query.

    Runs before anything reads the request. Werkzeug would quietly turn broken UTF-8 into U+FFFD,
    so the raw WSGI values are checked first.
    """
    try:
        env = request.environ
        raw_uri = env.get("RAW_URI") or env.get("REQUEST_URI") or ""  # what the client sent, if known
        try:
            env.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
            unquote_to_bytes(raw_uri.encode("latin-1")).decode("utf-8")
            unquote_to_bytes(env.get("QUERY_STRING", "")).decode("utf-8")
        except UnicodeError:
            raise jsonsafe.UnsafeInput("the path or query is not valid UTF-8") from None
        jsonsafe.check_text(request.path, "the path")
        for key, value in request.args.items(multi=True):
            jsonsafe.check_text(key, "a query parameter name")
            jsonsafe.check_text(value, f"query parameter {jsonsafe.printable(key, 40)!r}")
    except jsonsafe.UnsafeInput as e:
        raise ApiError(400, str(e)) from None
