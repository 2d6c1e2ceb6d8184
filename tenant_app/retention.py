"""Data retention rules: readings older than the license's `dataRetentionDays` expire, nothing newer.

Plain functions; the purge itself is the `run_retention` use case in `tenant_app.services`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from licensing.plans import DATA_RETENTION_DAYS, DEFAULT_RETENTION_DAYS
from licensing.tokens import License

DELETE_CHUNK = 10_000  # rows per transaction, so retention never holds long locks
# What expires, and in which attribute of PurgeResult its count goes.
PURGED_TABLES = (
    ("sensor_readings", "readings"),
    ("dead_letters", "dead_letters"),
    ("alert_events", "alert_events"),
)


def retention_days(license: License | None) -> int:
    """The license's retention in days (default 90); at least one day, whatever the claim says."""
    days = (
        DEFAULT_RETENTION_DAYS
        if license is None
        else license.limit(DATA_RETENTION_DAYS, DEFAULT_RETENTION_DAYS)
    )
    return max(1, int(days))


def retention_cutoff(now: datetime, days: int) -> datetime:
    """Rows with a timestamp strictly before this instant are expired."""
    if days < 1:
        raise ValueError("retention must be at least one day")
    return now - timedelta(days=days)


@dataclass
class PurgeResult:
    cutoff: datetime
    readings: int = 0
    dead_letters: int = 0
    alert_events: int = 0
