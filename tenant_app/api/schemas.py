"""The API's request and response shapes (marshmallow), from which `/api/openapi.json` is generated.

Fields here are strict on purpose: JSON numbers must be numbers (no "12" strings, no booleans, no
NaN), query numbers ASCII digits only (Python's int() also takes "١٢" and "１２"), every string
free of NUL bytes and lone surrogates. A value that fails answers 400 naming the field.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

import marshmallow as ma
from marshmallow import fields, validate
from werkzeug.routing import IntegerConverter

from licensing.access import ROLES
from tenant_app.alerts import OPERATORS
from tenant_app.downsampling import MAX_POINTS_LIMIT
from tenant_app.jsonsafe import UnsafeInput, check_text
from tenant_app.readings import METRICS, InvalidReading, parse_timestamp

_ASCII_INT = re.compile(r"[0-9]{1,18}\Z")
_ASCII_NUMBER = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?\Z")
MAX_ROW_ID = 2**63 - 1


class RowId(IntegerConverter):
    """A database id in a path: ASCII digits that fit a bigint (else the route does not match: 404)."""

    regex = r"[0-9]{1,18}"

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 (werkzeug's signature)
        super().__init__(map, min=1, max=MAX_ROW_ID)


def row_id_schema(converter: RowId) -> dict:
    return {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID}


class Text(fields.String):
    """A string that can be stored: no NUL byte, no lone surrogate, at most `max_length` characters."""

    def __init__(self, *, max_length: int = 200, min_length: int = 0, **kwargs) -> None:
        super().__init__(validate=validate.Length(min=min_length, max=max_length), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return check_text(text, "the value")
        except UnsafeInput as e:
            raise ma.ValidationError(str(e)) from None


class JsonNumber(fields.Float):
    """A finite JSON number: not a string, not a boolean, not NaN/Infinity, not beyond ±1e15."""

    def __init__(self, *, limit: float = 1e15, **kwargs) -> None:
        super().__init__(allow_nan=False, **kwargs)
        self.limit = limit

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ma.ValidationError("must be a JSON number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ma.ValidationError("must be a finite number")
        if not -self.limit <= value <= self.limit:
            raise ma.ValidationError(f"must be between {-self.limit:g} and {self.limit:g}")
        return float(value)


class JsonInt(fields.Integer):
    """A JSON integer within [minimum, maximum] (booleans, floats and strings refused)."""

    def __init__(self, *, minimum: int, maximum: int, **kwargs) -> None:
        super().__init__(strict=True, validate=validate.Range(minimum, maximum), **kwargs)


class QueryInt(fields.Integer):
    """An integer query parameter: ASCII digits only, within [minimum, maximum]."""

    def __init__(self, *, minimum: int, maximum: int, **kwargs) -> None:
        super().__init__(validate=validate.Range(minimum, maximum), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not _ASCII_INT.match(value):
            raise ma.ValidationError("must be a whole number written with the digits 0-9")
        return int(value)


class QueryTime(fields.DateTime):
    """A time in a query: epoch seconds (ASCII digits) or ISO 8601, between 2000 and 2100."""

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        if not isinstance(value, str) or len(value) > 64:
            raise ma.ValidationError("must be epoch seconds or an ISO 8601 time")
        try:
            check_text(value)
            parsed: object = float(value) if _ASCII_NUMBER.match(value) else value
            return parse_timestamp(parsed)
        except (InvalidReading, UnsafeInput) as e:
            raise ma.ValidationError(str(e)) from None


class StrictSchema(ma.Schema):
    """Unknown fields are an error (a typo in a field name is never silently ignored)."""

    class Meta:
        unknown = ma.RAISE


# --- requests ---------------------------------------------------------------------------------------
class DeviceCreate(StrictSchema):
    id = Text(required=True, max_length=63, metadata={"description": "device id: [a-z0-9][a-z0-9_-]{0,62}"})
    name = Text(load_default="", max_length=200)


class RuleCreate(StrictSchema):
    name = Text(load_default=None, allow_none=True, max_length=100)
    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    operator = fields.String(required=True, validate=validate.OneOf(tuple(OPERATORS)))
    threshold = JsonNumber(required=True)
    device_id = Text(load_default=None, allow_none=True, max_length=63)
    cooldown_seconds = JsonInt(load_default=300, minimum=0, maximum=86400)


class ApiKeyCreate(StrictSchema):
    name = Text(required=True, min_length=1, max_length=100)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class LimitArgs(StrictSchema):
    limit = QueryInt(load_default=100, minimum=1, maximum=1000)


class AlertHistoryArgs(LimitArgs):
    device_id = Text(load_default=None, max_length=63)


class RangeArgs(StrictSchema):
    from_ = QueryTime(data_key="from", load_default=None, metadata={"description": "epoch s or ISO 8601"})
    to = QueryTime(load_default=None, metadata={"description": "epoch s or ISO 8601 (default now)"})


class ReadingsArgs(RangeArgs):
    max_points = QueryInt(load_default=500, minimum=2, maximum=MAX_POINTS_LIMIT)


class ReadingIn(ma.Schema):
    """One reading (documentation of `POST /api/sensor-data`; validated by `readings.validate_reading`)."""

    class Meta:
        unknown = ma.INCLUDE  # devices send extra fields; they are ignored

    device_id = fields.String(metadata={"description": "required unless a device sends its own"})
    timestamp = fields.Raw(metadata={"description": "epoch seconds or ISO 8601; default now"})
    ts = fields.Raw(metadata={"description": "alias of timestamp"})
    temperature = fields.Float(metadata={"description": "°C, -40..85"})
    humidity = fields.Float(metadata={"description": "%, 0..100"})
    pressure = fields.Float(metadata={"description": "hPa, 300..1100"})
    gas_resistance = fields.Float(metadata={"description": "Ω, 1..1e9"})


# --- responses --------------------------------------------------------------------------------------
class Error(ma.Schema):
    error = fields.String(required=True)
    details = fields.Dict()


class Device(ma.Schema):
    id = fields.String()
    name = fields.String()
    created_at = fields.DateTime()
    last_seen = fields.DateTime(allow_none=True)


class DeviceList(ma.Schema):
    devices = fields.List(fields.Nested(Device))


class DeviceOne(ma.Schema):
    device = fields.Nested(Device)


class MqttCredentials(ma.Schema):
    host = fields.String()
    port = fields.Integer()
    websocket_url = fields.String(allow_none=True, metadata={"description": "wss://{id}.{domain}/mqtt"})
    client_id = fields.String()
    username = fields.String()
    password = fields.String(metadata={"description": "shown once"})
    topic = fields.String()
    qos = fields.Integer()


class DeviceRegistered(DeviceOne):
    mqtt = fields.Nested(MqttCredentials)


class ReadingOut(ma.Schema):
    timestamp = fields.DateTime()
    temperature = fields.Float(allow_none=True)
    humidity = fields.Float(allow_none=True)
    pressure = fields.Float(allow_none=True)
    gas_resistance = fields.Float(allow_none=True)
    count = fields.Integer(metadata={"description": "rows averaged (downsampled answers only)"})


class DeviceReadings(ma.Schema):
    device_id = fields.String()
    from_ = fields.DateTime(data_key="from", attribute="from")
    to = fields.DateTime()
    bucket_seconds = fields.Integer(allow_none=True)
    readings = fields.List(fields.Nested(ReadingOut))


class LatestReading(ReadingOut):
    device_id = fields.String()


class LatestReadings(ma.Schema):
    readings = fields.List(fields.Nested(LatestReading))


class IngestResult(ma.Schema):
    stored = fields.Integer()
    duplicates = fields.Integer()
    alerts = fields.Integer()


class DeadLetter(ma.Schema):
    id = fields.Integer()
    received_at = fields.DateTime()
    topic = fields.String()
    payload = fields.String(metadata={"description": "the first 4 KiB, escaped"})
    payload_bytes = fields.Integer(allow_none=True)
    reason = fields.String()


class DeadLetters(ma.Schema):
    dead_letters = fields.List(fields.Nested(DeadLetter))
    usage = fields.Dict(keys=fields.String(), values=fields.Integer())


class Rule(ma.Schema):
    id = fields.Integer()
    name = fields.String()
    metric = fields.String()
    operator = fields.String()
    threshold = fields.Float()
    device_id = fields.String(allow_none=True)
    cooldown_seconds = fields.Integer()
    created_at = fields.DateTime()


class RuleOne(ma.Schema):
    rule = fields.Nested(Rule)


class RuleList(ma.Schema):
    rules = fields.List(fields.Nested(Rule))


class AlertEvent(ma.Schema):
    id = fields.Integer()
    rule_id = fields.Integer()
    rule_name = fields.String()
    device_id = fields.String()
    metric = fields.String()
    operator = fields.String()
    threshold = fields.Float()
    value = fields.Float()
    reading_time = fields.DateTime()
    created_at = fields.DateTime()


class AlertHistory(ma.Schema):
    alerts = fields.List(fields.Nested(AlertEvent))


class ApiKey(ma.Schema):
    id = fields.Integer()
    name = fields.String()
    role = fields.String()
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)


class ApiKeyCreated(ma.Schema):
    key = fields.Nested(ApiKey)
    secret = fields.String(metadata={"description": "the API key itself: shown once, never again"})


class ApiKeyOne(ma.Schema):
    key = fields.Nested(ApiKey)


class ApiKeyList(ma.Schema):
    keys = fields.List(fields.Nested(ApiKey))
