"""Sensor readings and their validation (BME688-like: temperature, humidity, pressure, gas).

Plain functions, no HTTP or SQL: the HTTP path and the MQTT consumer validate the same way.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from tenant_app.errors import InvalidInput
from tenant_app.jsonsafe import has_unstorable, printable

DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RESERVED_PREFIX = "iotistic"  # broker accounts of the platform itself (admin, consumer)

# Plausible ranges (BME688 operating ranges, gas resistance as the sensor reports it).
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-40.0, 85.0),  # °C
    "humidity": (0.0, 100.0),  # %
    "pressure": (300.0, 1100.0),  # hPa
    "gas_resistance": (1.0, 1.0e9),  # Ω
}
UNITS = {"temperature": "°C", "humidity": "%", "pressure": "hPa", "gas_resistance": "Ω"}
METRICS = tuple(RANGES)
# Names devices and Node-RED flows commonly use, mapped to ours (the seed's example uses `temp`).
ALIASES = {"temp": "temperature", "gas": "gas_resistance", "gasResistance": "gas_resistance"}
MAX_CLOCK_SKEW = timedelta(minutes=5)
# The sane window for any stored or queried time: no sensor of ours reports from before 2000, and
# nothing is stored for after 2100 (far-future times would outlive retention and break ranges).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_EARLIEST_TS, _LATEST_TS = EARLIEST.timestamp(), LATEST.timestamp()
MAX_ABS_VALUE = 2**53  # an integer beyond this is not a measurement (and overflows float checks)
# Every key a reading may use (aliases included) -> (metric, low, high): one lookup per value.
_BOUNDS: dict[str, tuple[str, float, float]] = {
    key: (metric, *RANGES[metric]) for key, metric in {**{m: m for m in RANGES}, **ALIASES}.items()
}


class InvalidReading(InvalidInput):
    """A reading that cannot be stored; the message says which field and why."""


class Reading(NamedTuple):
    """One stored row of `sensor_readings` (id aside). A NamedTuple: immutable, and built at the
    consumer's rate (tens of thousands a second) for a fraction of a frozen dataclass's cost."""

    device_id: str
    timestamp: datetime
    temperature: float | None = None
    humidity: float | None = None
    pressure: float | None = None
    gas_resistance: float | None = None

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)


# Device ids already found valid: the consumer checks the same few thousand ids over and over.
_VALID_IDS: set[str] = set()
_VALID_IDS_MAX = 10_000


def validate_device_id(device_id: object) -> str:
    """The device id if it is usable as an MQTT username and topic level, else InvalidReading."""
    if type(device_id) is str and device_id in _VALID_IDS:
        return device_id
    if not isinstance(device_id, str) or not DEVICE_ID.match(device_id):
        raise InvalidReading(
            "device id must be 1-63 characters of lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    if device_id.startswith(RESERVED_PREFIX):
        raise InvalidReading(f"device ids starting with {RESERVED_PREFIX!r} are reserved")
    if type(device_id) is str:  # not a subclass, whose == or hash could lie
        if len(_VALID_IDS) >= _VALID_IDS_MAX:
            _VALID_IDS.clear()
        _VALID_IDS.add(device_id)
    return device_id


def parse_timestamp(value: object, now: datetime | None = None) -> datetime:
    """Epoch seconds or ISO 8601 (naive means UTC), between 2000 and 2100.

    With `now`, times over 5 minutes ahead of it are refused too (a reading from the future).
    """
    kind = type(value)
    if (kind is float or kind is int) and _EARLIEST_TS <= value < _LATEST_TS:  # the usual case
        ts = datetime.fromtimestamp(value, UTC)
        if now is not None and ts > now + MAX_CLOCK_SKEW:
            raise InvalidReading(f"timestamp {ts.isoformat()} is in the future")
        return ts
    if isinstance(value, bool):
        raise InvalidReading("timestamp must be epoch seconds or an ISO 8601 string")
    try:
        if isinstance(value, int | float):
            if not math.isfinite(value) or not _EARLIEST_TS <= value < _LATEST_TS:
                raise InvalidReading(
                    f"timestamp {value!r} is not epoch seconds between {EARLIEST.year} and {LATEST.year}"
                )
            ts = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str):
            if len(value) > 64:
                raise InvalidReading("timestamp is not ISO 8601 (too long)")
            if has_unstorable(value):  # fromisoformat would stop reading at a NUL and accept the rest
                raise InvalidReading("timestamp contains a NUL byte or an unpaired surrogate")
            try:
                ts = datetime.fromisoformat(value)
            except ValueError:
                raise InvalidReading(f"timestamp {printable(value, 64)!r} is not ISO 8601") from None
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            if not EARLIEST <= ts < LATEST:
                raise InvalidReading(
                    f"timestamp {printable(value, 64)} is outside {EARLIEST.year}..{LATEST.year}"
                )
        else:
            raise InvalidReading("timestamp must be epoch seconds or an ISO 8601 string")
    except (OverflowError, OSError):  # an offset pushing the time past datetime's range
        raise InvalidReading("timestamp is outside the representable range") from None
    if now is not None and ts > now + MAX_CLOCK_SKEW:
        raise InvalidReading(f"timestamp {ts.isoformat()} is in the future")
    return ts


def _refuse_value(metric: str, raw: object, low: float, high: float) -> None:
    """Raise the InvalidReading that says what is wrong with a value outside the usual case."""
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or (isinstance(raw, int) and not -MAX_ABS_VALUE <= raw <= MAX_ABS_VALUE)
        or not math.isfinite(raw)
    ):
        raise InvalidReading(f"{metric} must be a number")
    if not low <= raw <= high:
        raise InvalidReading(f"{metric} {raw} {UNITS[metric]} is outside {low:g}..{high:g} {UNITS[metric]}")


def validate_reading(
    data: object, *, device_id: str | None = None, now: datetime, require_timestamp: bool = False
) -> Reading:
    """Turn a decoded JSON object into a Reading, or raise InvalidReading.

    `device_id` comes from the MQTT topic when given (the broker vouches for it), otherwise from
    the body. Without a timestamp the reading is stamped `now`, unless one is required: over MQTT
    the device's timestamp is the message key that makes redelivery idempotent.
    """
    if not isinstance(data, dict):
        raise InvalidReading("a reading must be a JSON object")
    values: dict[str, float] = {}
    for key, raw in data.items():
        bounds = _BOUNDS.get(key)
        if bounds is None or raw is None:
            continue
        metric, low, high = bounds
        kind = type(raw)  # exact types: bool (an int subclass) and the rest take the checks below
        if (kind is float or kind is int) and low <= raw <= high:  # NaN fails the comparison
            values[metric] = float(raw)
        else:
            _refuse_value(metric, raw, low, high)
    if not values:
        raise InvalidReading(f"a reading needs at least one of {', '.join(METRICS)}")
    device = validate_device_id(device_id if device_id is not None else data.get("device_id"))
    raw_ts = data.get("timestamp", data.get("ts"))
    if raw_ts is None:
        if require_timestamp:
            raise InvalidReading("timestamp is required (it is the reading's idempotency key)")
        timestamp = now
    else:
        timestamp = parse_timestamp(raw_ts, now)
    return Reading(device, timestamp, **values)
