"""What the local services share: running as their own user, and readable start failures."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service failed to start; the message names it and quotes its log."""


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def as_service_user(user: str) -> list[str]:
    """Prefix that runs a command as `user` when we are root (initdb refuses to run as root)."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def check_traversable(path: Path, user: str) -> None:
    """Fail early, with the fix, when `user` cannot reach `path` (e.g. a checkout under /root)."""
    if os.geteuid() != 0:
        return
    probe = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(path.parent)], capture_output=True)
    if probe.returncode != 0:
        raise ServiceError(
            f"the '{user}' user cannot reach {path.parent}; set IOTISTIC_DATA to a folder it can "
            f"traverse (e.g. /var/tmp/iotistic-data)"
        )
