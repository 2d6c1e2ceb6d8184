"""Data retention: readings older than the license's `dataRetentionDays` are deleted, nothing newer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from licensing.plans import DATA_RETENTION_DAYS, DEFAULT_RETENTION_DAYS
from licensing.tokens import License

log = logging.getLogger(__name__)
DELETE_CHUNK = 10_000  # rows per transaction, so retention never holds long locks


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


def purge(conn: psycopg.Connection, cutoff: datetime) -> PurgeResult:
    """Delete readings, dead letters and alert events older than `cutoff`, in short transactions."""
    result = PurgeResult(cutoff)
    for table, column, attr in (
        ("sensor_readings", "timestamp", "readings"),
        ("dead_letters", "received_at", "dead_letters"),
        ("alert_events", "reading_time", "alert_events"),
    ):
        while True:
            with conn.transaction():
                deleted = conn.execute(
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {column} < %s LIMIT %s)",
                    (cutoff, DELETE_CHUNK),
                ).rowcount
            setattr(result, attr, getattr(result, attr) + deleted)
            if deleted < DELETE_CHUNK:
                break
    return result


class RetentionJob:
    """One purge with the current license; scheduled by `jobs.Periodic` in the API process."""

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[psycopg.Connection]],
        current_license: Callable[[], License | None],
        clock: Callable[[], datetime],
    ) -> None:
        self._connect = connect
        self._license = current_license
        self._clock = clock
        self.last_run: PurgeResult | None = None

    def run_once(self) -> PurgeResult | None:
        """Purge with the current license; None (nothing deleted) without a verified license."""
        lic = self._license()
        if lic is None:
            log.warning("retention skipped: no verified license, so no retention period is known")
            return None
        cutoff = retention_cutoff(self._clock(), retention_days(lic))
        with self._connect() as conn:
            result = purge(conn, cutoff)
        log.info(
            "retention purge done",
            extra={
                "cutoff": cutoff.isoformat(),
                "readings": result.readings,
                "dead_letters": result.dead_letters,
            },
        )
        self.last_run = result
        return result
