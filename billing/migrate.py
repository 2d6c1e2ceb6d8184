"""Versioned schema migrations of the billing database: `python -m billing migrate`.

`billing/migrations/NNNN_name.sql` files are applied in order, each in its own transaction,
recorded in `schema_migrations`; the job queue's own schema (procrastinate) is one of the steps.
An advisory lock makes concurrent starters (API and worker pods) wait for each other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x10715  # any constant: one advisory lock for "migrating the billing schema"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[psycopg.Connection], None]


def _sql_step(path: Path) -> Callable[[psycopg.Connection], None]:
    def apply(conn: psycopg.Connection) -> None:
        conn.execute(path.read_text())

    return apply


def _procrastinate_schema(conn: psycopg.Connection) -> None:
    from procrastinate.schema import SchemaManager

    conn.execute(SchemaManager.get_schema())


def migrations() -> list[Migration]:
    """Every migration in order: the SQL files, then the job queue's schema as version 1000."""
    steps = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", path.name)
        if not match:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_name.sql")
        steps.append(Migration(int(match[1]), match[2], _sql_step(path)))
    steps.append(Migration(1000, "procrastinate_job_queue", _procrastinate_schema))
    return steps


def migrate(database_url: str) -> list[str]:
    """Apply what is missing; returns the names applied (empty when the schema is current)."""
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for step in migrations():
                if step.version in done:
                    continue
                with conn.transaction():
                    step.apply(conn)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (step.version, step.name),
                    )
                log.info("migration applied", extra={"version": step.version, "migration": step.name})
                applied.append(f"{step.version:04d}_{step.name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
