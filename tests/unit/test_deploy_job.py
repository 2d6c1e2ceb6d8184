"""The deploy path's pure parts: a job survives the trip to its process, stale locks are told apart."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from automation.deploy import TRANSIENT, DeployJob, stale_lock
from automation.workspace import StackSettings
from tenancy.schema import Tenant

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def lock_error(host: str, pid: int, at: datetime) -> str:
    return (
        "the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete "
        "the lock file with `pulumi cancel`.\n"
        "  file:///state/.pulumi/locks/organization/iotistic/acme/x.json: "
        f"created by root@{host} (pid {pid}) at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )


def test_a_job_round_trips_through_json_without_losing_anything():
    pem = "-----BEGIN PUBLIC KEY-----"
    settings = StackSettings("file:///s", "pass", "/k", Path("/w"), (("AWS_REGION", "eu"),), Path("/c"), pem)
    job = DeployJob(
        "up", "acme", settings, Tenant("acme", "a@b.io", "A", "starter", {}), "jwt", "signup", suspended=True
    )
    again = DeployJob.from_json(job.to_json())
    assert again == job
    assert "jwt" not in repr(job)  # the license stays out of logs and tracebacks


def test_a_lock_of_a_dead_local_process_or_an_old_one_is_stale():
    here = socket.gethostname()
    dead = 2**22 + 12345  # above pid_max on this machine
    assert stale_lock(lock_error(here, dead, NOW), NOW)
    assert stale_lock(lock_error("elsewhere", 1, NOW - timedelta(hours=1)), NOW)


def test_a_lock_of_a_live_process_or_a_recent_one_elsewhere_is_not_stale():
    here = socket.gethostname()
    assert not stale_lock(lock_error(here, os.getpid(), NOW), NOW)
    assert not stale_lock(lock_error("elsewhere", 1, NOW - timedelta(minutes=1)), NOW)
    assert not stale_lock("some other engine error", NOW)


def test_transient_failures_are_recognised():
    assert TRANSIENT.search(lock_error("h", 1, NOW))
    assert TRANSIENT.search("dial tcp 127.0.0.1:56443: connect: connection refused")
    assert not TRANSIENT.search("admission webhook denied the request: namespace forbidden")


def test_an_engine_failure_reads_as_its_diagnostics_not_its_summary():
    from pulumi import automation as auto
    from pulumi.automation._cmd import CommandResult

    from automation.provision import error_text

    stdout = (
        "Updating (acme):\n +  pulumi:pulumi:Stack iotistic-acme creating\n"
        " +  kubernetes:core/v1:Namespace namespace creating failed error: forbidden\n"
        "Diagnostics:\n  kubernetes:core/v1:Namespace (namespace):\n"
        '    error: namespaces "customer-acme" is forbidden: customer namespaces are frozen\n\n'
        "  pulumi:pulumi:Stack (iotistic-acme):\n    error: update failed\n\n"
        "Resources:\n    + 3 created\n    2 errored\n\nDuration: 7s\n"
    )
    text = error_text(auto.CommandError(CommandResult(stdout=stdout, stderr="", code=255)))
    assert "customer namespaces are frozen" in text and "Namespace (namespace)" in text
    assert "Duration" not in text and "Traceback" not in text
