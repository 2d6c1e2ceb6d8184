"""Hostile-input rules for text and JSON, shared by the HTTP API and the MQTT consumer.

Everything a client sends is checked here before any rule or SQL sees it, so a whole class of
input is refused in one place: NUL bytes and lone surrogates (Postgres and UTF-8 cannot hold
them), NaN/Infinity (not JSON, and a stored NaN would poison every later answer), integers too
large for a float or a bigint, nesting deeper than any real document. Output goes through
`sanitize` so a value stored before these rules existed still serialises as valid JSON.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from tenant_app.errors import InvalidInput

MAX_DEPTH = 16  # objects/arrays inside each other; a reading is 1 deep, a batch 2
MAX_STRING = 4096  # characters in any one string of a request
MAX_SAFE_INT = 2**53  # larger integers lose precision as float8 and overflow bigint soon after
# NUL and UTF-16 surrogate halves: neither survives UTF-8 encoding or a Postgres text column.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UnsafeInput(InvalidInput):
    """Input that is refused before any rule sees it; the message says what and where."""


def has_unstorable(value: str) -> bool:
    """True when `value` holds a NUL byte or an unpaired surrogate."""
    return _UNSTORABLE.search(value) is not None


def check_text(value: str, where: str = "text") -> str:
    """`value` if it can be stored as text; UnsafeInput naming `where` otherwise."""
    if has_unstorable(value):
        raise UnsafeInput(f"{where} contains a NUL byte or an unpaired surrogate")
    return value


def _reject_constant(name: str) -> float:
    raise UnsafeInput(f"{name} is not a JSON number (NaN and Infinity are refused)")


def loads(data: bytes | str) -> Any:
    """Parse JSON strictly: UnsafeInput for anything `json.loads` would accept but we cannot store.

    Refuses invalid UTF-8, NaN/Infinity, floats that overflow to infinity, integers beyond
    ±2**53, strings with NUL or lone surrogates (also in keys) or longer than MAX_STRING, and
    nesting deeper than MAX_DEPTH. Malformed JSON raises UnsafeInput too.
    """
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise UnsafeInput(f"the body is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise UnsafeInput(f"JSON is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as e:
        raise UnsafeInput(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # e.g. integers longer than Python's 4300-digit conversion limit
        raise UnsafeInput(f"not valid JSON: {e}") from None
    check_value(value)
    return value


def check_value(value: Any, path: str = "$", depth: int = 0) -> None:
    """Walk a decoded JSON value and raise UnsafeInput at the first unsafe part (named by path)."""
    if depth > MAX_DEPTH:
        raise UnsafeInput(f"JSON is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise UnsafeInput(f"{path} is longer than {MAX_STRING} characters")
        check_text(value, path)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise UnsafeInput(f"{path} is an integer beyond ±2**53")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise UnsafeInput(f"{path} is too large for a number")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"a key in {path}")
            if len(key) > MAX_STRING:
                raise UnsafeInput(f"a key in {path} is longer than {MAX_STRING} characters")
            check_value(item, f"{path}.{key}" if len(key) <= 40 else f"{path}.<key>", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]", depth + 1)


def sanitize(value: Any) -> Any:
    """A copy of `value` that is valid JSON: non-finite floats become null (never NaN in output)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    return value


def printable(value: str, limit: int = 200) -> str:
    """`value` made safe to store and show: unstorable characters escaped, cut to `limit`."""
    text = _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    return text if len(text) <= limit else text[:limit] + "…"
