"""Helpers the blueprints share: the app's services, license gates and request parsing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING

from flask import current_app, request

from licensing import License
from tenant_app import license_state
from tenant_app.api.errors import ApiError
from tenant_app.readings import InvalidReading, parse_timestamp

if TYPE_CHECKING:
    from tenant_app.api import ApiServices


def services() -> ApiServices:
    return current_app.extensions["iotistic"]


def now() -> datetime:
    return services().clock()


def readable() -> License:
    """The license, if reads are allowed (genuine, even if expired); else 403."""
    return license_state.require_readable(services().license.current())


def writable() -> License:
    """The license, if writes are allowed (valid and unexpired); else 402/403."""
    return license_state.require_writable(services().license.current())


def requires(access: Callable[[], License], feature: str | None = None):
    """Decorator: check the license (and a plan feature) before the handler runs."""

    def decorate(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            lic = access()
            if feature is not None:
                license_state.require_feature(lic, feature)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def json_body() -> object:
    """The request's JSON body, or a 400 that says what is wrong with it."""
    if not request.is_json:
        raise ApiError(415, "send a JSON body with Content-Type: application/json")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "the body is not valid JSON")
    return data


def time_arg(name: str, default: datetime) -> datetime:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value: object = float(raw) if raw.replace(".", "", 1).isdigit() else raw
        return parse_timestamp(value)
    except InvalidReading as e:
        raise ApiError(400, f"'{name}': {e}") from None


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high}")
    return value
