"""The deploy path's pure parts: a job survives the trip to its process, stale locks are told apart."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from automation import deploy
from automation.deploy import CONFLICT_ATTEMPTS, TRANSIENT, DeployJob, execute, stale_lock
from automation.provision import StackResult
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


# What the 1,000-customer run's one failure said (c0776's mosquitto Service, refused by the
# ResourceQuota admission plugin while it updated the namespace's quota usage).
QUOTA_CONFLICT = (
    "kubernetes:core/v1:Service (mosquitto):\n    error: resource iotistic-c0776/mosquitto was not "
    "successfully created by the Kubernetes API server : Operation cannot be fulfilled on resourcequotas "
    '"instance-quota": the object has been modified; please apply your changes to the latest version and '
    "try again"
)


def _scripted(monkeypatch, results: list[StackResult]) -> list[str]:
    """Make each `_attempt` return the next of `results`; returns the log lines."""
    left = iter(results)
    monkeypatch.setattr(deploy, "_attempt", lambda job, log: next(left))
    return []


def _up_job() -> DeployJob:
    settings = StackSettings("file:///s", "pass", None, Path("/w"))
    return DeployJob("up", "c0776", settings, Tenant("c0776", "a@b.io", "C", "starter", {}), "jwt")


def test_a_write_conflict_in_the_api_server_is_tried_again_until_the_deploy_succeeds(monkeypatch):
    failed = StackResult("c0776", "up", False, 5.0, error=QUOTA_CONFLICT)
    logged = _scripted(monkeypatch, [failed, failed, StackResult("c0776", "up", True, 4.0)])
    waits: list[float] = []
    result = execute(_up_job(), logged.append, sleep=waits.append)
    assert result.ok and result.seconds == 14.0  # every attempt counted
    assert waits == [2.0, 4.0]
    assert logged[-1].endswith(f"try {CONFLICT_ATTEMPTS} of {CONFLICT_ATTEMPTS}")


def test_a_conflict_that_persists_ends_as_a_transient_failure_after_the_last_try(monkeypatch):
    failed = StackResult("c0776", "up", False, 5.0, error=QUOTA_CONFLICT)
    _scripted(monkeypatch, [failed] * CONFLICT_ATTEMPTS)
    result = execute(_up_job(), lambda _: None, sleep=lambda _: None)
    assert not result.ok and result.transient  # the job queue's retry takes it from there
    assert "instance-quota" in result.error


def test_other_failures_are_not_tried_again(monkeypatch):
    refused = StackResult("c0776", "up", False, 5.0, error="namespaces is forbidden: frozen")
    _scripted(monkeypatch, [refused, StackResult("c0776", "up", True)])
    result = execute(_up_job(), lambda _: None, sleep=lambda _: None)
    assert not result.ok and not result.transient


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
