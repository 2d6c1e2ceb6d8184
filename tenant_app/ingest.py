"""MQTT telemetry messages: which device a topic names, and the Reading a payload holds (no I/O).

Whatever a device sends, `parse_message` either returns a valid Reading or raises InvalidReading
with the reason the message is dead-lettered: never another exception.
"""

from __future__ import annotations

import json
from datetime import datetime

from tenant_app.config import MQTT_MAX_PAYLOAD_BYTES, TELEMETRY_TOPIC
from tenant_app.readings import InvalidReading, Reading, validate_reading

_TOPIC_PREFIX, _TOPIC_SUFFIX = TELEMETRY_TOPIC.split("{device_id}")


def _reject_constant(name: str) -> float:
    raise InvalidReading(f"payload has {name}, which is not a JSON number")


# One decoder for every message (json.loads with options would build a new one each time).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def device_from_topic(topic: str) -> str | None:
    """`sensor/<device>/telemetry` -> `<device>`; None for any other topic."""
    if topic.startswith(_TOPIC_PREFIX) and topic.endswith(_TOPIC_SUFFIX):
        device = topic[len(_TOPIC_PREFIX) : len(topic) - len(_TOPIC_SUFFIX)]
        if device and "/" not in device:
            return device
    return None


def parse_message(topic: str, payload: bytes, now: datetime) -> Reading:
    """Validate one MQTT telemetry message; InvalidReading says why it is dead-lettered."""
    device = device_from_topic(topic)
    if device is None:
        raise InvalidReading(f"topic {topic[:200]!r} is not a telemetry topic")
    if len(payload) > MQTT_MAX_PAYLOAD_BYTES:
        raise InvalidReading(f"payload is {len(payload)} bytes, over the {MQTT_MAX_PAYLOAD_BYTES}-byte limit")
    try:
        data = _DECODER.decode(payload.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InvalidReading(f"payload is not JSON (not UTF-8: {e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InvalidReading(f"payload is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise InvalidReading("payload JSON is nested too deeply") from None
    except InvalidReading:
        raise
    except ValueError as e:  # e.g. an integer longer than Python's 4300-digit conversion limit
        raise InvalidReading(f"payload is not JSON: {str(e)[:200]}") from None
    return validate_reading(data, device_id=device, now=now, require_timestamp=True)
