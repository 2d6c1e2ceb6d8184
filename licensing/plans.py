"""Plans and what each one includes: the single place where features and limits are defined.

The billing service copies a plan's features and limits into every license it signs; the customer
instance then trusts the signed claims, so a plan change here only affects licenses signed after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Feature names, as they appear in a license's `features` claim.
HTTP_INGESTION = "http_ingestion"  # POST /api/sensor-data (the Node-RED path)
MQTT_INGESTION = "mqtt_ingestion"  # direct MQTT ingestion by the consumer
HISTORY = "history"  # readings for a time range, downsampled
ALERTS = "alerts"  # threshold rules and alert history
DATA_EXPORT = "data_export"  # CSV export of a device's readings
PRIORITY_SUPPORT = "priority_support"  # not an endpoint: shown in the dashboard

# Limit names, as they appear in a license's `limits` claim.
MAX_DEVICES = "maxDevices"
DATA_RETENTION_DAYS = "dataRetentionDays"
MAX_ALERT_RULES = "maxAlertRules"

DEFAULT_RETENTION_DAYS = 90
# The Postgres volume every instance of a plan gets at least (policy/ refuses a smaller one). The
# same for every plan today: a claim template cannot grow in place, so a plan change that needed a
# bigger volume would replace the StatefulSet; raise one only together with an in-place expansion.
DEFAULT_POSTGRES_STORAGE = "10Gi"


@dataclass(frozen=True)
class Plan:
    """A named bundle of features and numeric limits."""

    name: str
    features: tuple[str, ...]
    limits: Mapping[str, int] = field(default_factory=dict)
    postgres_storage: str = DEFAULT_POSTGRES_STORAGE

    def claims(self) -> dict:
        """The `plan`, `features` and `limits` claims of a license for this plan."""
        return {"plan": self.name, "features": list(self.features), "limits": dict(self.limits)}


_BASE = (HTTP_INGESTION, MQTT_INGESTION, HISTORY, ALERTS)

PLANS: Mapping[str, Plan] = MappingProxyType(
    {
        "starter": Plan(
            "starter",
            _BASE,
            MappingProxyType({MAX_DEVICES: 5, DATA_RETENTION_DAYS: 30, MAX_ALERT_RULES: 5}),
        ),
        "professional": Plan(
            "professional",
            (*_BASE, DATA_EXPORT),
            MappingProxyType({MAX_DEVICES: 50, DATA_RETENTION_DAYS: 90, MAX_ALERT_RULES: 50}),
        ),
        "enterprise": Plan(
            "enterprise",
            (*_BASE, DATA_EXPORT, PRIORITY_SUPPORT),
            MappingProxyType({MAX_DEVICES: 1000, DATA_RETENTION_DAYS: 365, MAX_ALERT_RULES: 500}),
        ),
    }
)


def get_plan(name: str) -> Plan:
    """The plan called `name`; a KeyError names the plans that exist."""
    try:
        return PLANS[name]
    except KeyError:
        raise KeyError(f"unknown plan {name!r}; plans are {', '.join(PLANS)}") from None
