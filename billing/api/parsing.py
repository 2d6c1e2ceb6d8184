"""Request parsing that answers every bad body with a 4xx JSON error, never a 500.

webargs (under flask-smorest) is told to: refuse a body that is not `application/json` (415),
refuse JSON that Python would accept but nothing downstream can store (NaN, Infinity, integers of
thousands of digits, nesting deep enough to exhaust the stack: 400), and report schema errors as
400 rather than 422. Flask's MAX_CONTENT_LENGTH turns an oversized body into 413.
"""

from __future__ import annotations

import json
import math
import typing

import flask
from flask_smorest import Blueprint
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request

MAX_DEPTH = 32


class BadJson(ValueError):
    """The body is not JSON this service accepts; the message says why."""


def _no_constants(name: str):
    raise BadJson(f"{name} is not allowed in JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity
        raise BadJson(f"the number {text[:20]} is out of range")
    return value


def _depth(value: object, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            raise BadJson(f"JSON nested deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)


def strict_json(raw: bytes) -> object:
    """Parse `raw` strictly: UTF-8 JSON, no NaN/Infinity, bounded nesting and number sizes."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except BadJson:
        raise
    except RecursionError:
        raise BadJson(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as e:  # includes ints over Python's digit limit
        raise BadJson(f"the body is not valid JSON: {str(e).splitlines()[0]}") from None
    _depth(value, MAX_DEPTH)
    return value


class StrictParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req: flask.Request, schema) -> typing.Any:
        raw = req.get_data(cache=True)
        if not raw:
            return core.missing
        if not is_json_request(req):
            abort(415, messages={"json": ["send the body as JSON with Content-Type: application/json"]})
        try:
            return strict_json(raw)
        except BadJson as e:
            abort(400, messages={"json": [str(e)]})


class ApiBlueprint(Blueprint):
    """A flask-smorest Blueprint whose arguments go through StrictParser."""

    ARGUMENTS_PARSER = StrictParser()


def flatten_messages(messages: object, prefix: str = "") -> list[tuple[str, str]]:
    """webargs/marshmallow error messages → [(field, message)], the location level dropped."""
    out: list[tuple[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = (
                ""
                if key in ("json", "query", "headers", "path", "view_args", "_schema") and not prefix
                else str(key)
            )
            out += flatten_messages(value, f"{prefix}.{name}" if prefix and name else prefix or name)
    elif isinstance(messages, list | tuple):
        for value in messages:
            out += flatten_messages(value, prefix)
    else:
        out.append((prefix, str(messages)))
    return out
