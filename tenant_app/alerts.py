"""Threshold alerts: rule validation and evaluation of readings against rules (no I/O)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenant_app.errors import InvalidInput
from tenant_app.readings import METRICS, Reading, validate_device_id

OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
DEFAULT_COOLDOWN_SECONDS = 300
MAX_THRESHOLD = 1e15  # far beyond any sensor range; refuses NaN, Infinity and 400-digit integers


class InvalidRule(InvalidInput):
    """An alert rule that cannot be created; the message names the field."""


@dataclass(frozen=True)
class AlertRule:
    """Fire when `metric operator threshold` holds for a device (all devices when device_id is None)."""

    id: int
    name: str
    metric: str
    operator: str
    threshold: float
    device_id: str | None = None
    cooldown_seconds: int = DEFAULT_COOLDOWN_SECONDS

    def matches(self, reading: Reading) -> float | None:
        """The reading's value when it breaches this rule, else None."""
        if self.device_id is not None and self.device_id != reading.device_id:
            return None
        value = reading.value(self.metric)
        if value is not None and OPERATORS[self.operator](value, self.threshold):
            return value
        return None


@dataclass(frozen=True)
class AlertEvent:
    """One firing of a rule for one reading."""

    rule: AlertRule
    device_id: str
    value: float
    reading_time: datetime


def validate_rule(data: object) -> dict:
    """Check a rule submitted as JSON; return the fields to store, or raise InvalidRule."""
    if not isinstance(data, dict):
        raise InvalidRule("an alert rule must be a JSON object")
    metric = data.get("metric")
    if metric not in METRICS:
        raise InvalidRule(f"metric must be one of {', '.join(METRICS)}")
    op = data.get("operator")
    if op not in OPERATORS:
        raise InvalidRule(f"operator must be one of {', '.join(OPERATORS)}")
    threshold = data.get("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not -MAX_THRESHOLD <= threshold <= MAX_THRESHOLD  # also refuses NaN
    ):
        raise InvalidRule(f"threshold must be a finite number within ±{MAX_THRESHOLD:g}")
    cooldown = data.get("cooldown_seconds", DEFAULT_COOLDOWN_SECONDS)
    if isinstance(cooldown, bool) or not isinstance(cooldown, int) or not 0 <= cooldown <= 86400:
        raise InvalidRule("cooldown_seconds must be an integer between 0 and 86400")
    device_id = data.get("device_id")
    if device_id is not None:
        try:
            validate_device_id(device_id)
        except ValueError as e:
            raise InvalidRule(str(e)) from None
    name = data.get("name") or f"{metric} {op} {threshold:g}"
    if not isinstance(name, str) or len(name) > 100:
        raise InvalidRule("name must be a string of at most 100 characters")
    return {
        "name": name,
        "metric": metric,
        "operator": op,
        "threshold": float(threshold),
        "device_id": device_id,
        "cooldown_seconds": cooldown,
    }


def evaluate(
    rules: Iterable[AlertRule],
    readings: Iterable[Reading],
    last_fired: Mapping[tuple[int, str], datetime],
) -> list[AlertEvent]:
    """Events for readings that breach a rule, at most one per rule and device per cooldown.

    `last_fired` maps (rule id, device id) to the reading time of the latest stored event, so a
    sensor stuck above a threshold raises one alert per cooldown instead of one per reading.
    """
    fired = dict(last_fired)
    events: list[AlertEvent] = []
    ordered = sorted(readings, key=lambda r: r.timestamp)
    for rule in rules:
        cooldown = timedelta(seconds=rule.cooldown_seconds)
        for reading in ordered:
            value = rule.matches(reading)
            if value is None:
                continue
            key = (rule.id, reading.device_id)
            previous = fired.get(key)
            if previous is not None and abs(reading.timestamp - previous) < cooldown:
                continue
            fired[key] = reading.timestamp
            events.append(AlertEvent(rule, reading.device_id, value, reading.timestamp))
    return events
