"""`once_deployed`: the bookkeeping the reconcile command trusts resolves only after the whole
instance is deployed. The real failure and re-run: tests/cluster/test_failed_deploys.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pulumi

from components import Storage
from components.completion import once_deployed
from tests.pulumi_mocks import RecordingMocks, acme_instance, run_program

SERVICE = "kubernetes:core/v1:Service"
ROOT = Path(__file__).resolve().parents[2]


class RefusingMocks(RecordingMocks):
    """Mocks in which the API server refuses one Service, as the 1,000-customer run's quota conflict did."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ == SERVICE and args.name.endswith("mosquitto"):
            raise RuntimeError("the object has been modified")
        return super().new_resource(args)


def _instance_with(mocks: RecordingMocks) -> dict:
    pulumi.runtime.set_mocks(mocks, project="iotistic", stack="acme", preview=False)
    seen: dict = {}

    def program() -> None:
        instance = acme_instance(storage=Storage(storage_class="standard"))
        seen["hash"] = once_deployed(instance, "f00d")
        seen["hash"].apply(lambda v: seen.setdefault("value", v))

    try:
        run_program(program)
    except Exception as e:  # the refused resource fails the program, as in a real update
        seen["error"] = e
    return seen


def test_the_fingerprint_resolves_once_every_resource_is_deployed():
    mocks = RecordingMocks()
    seen = _instance_with(mocks)
    assert seen.get("value") == "f00d" and "error" not in seen
    assert len(mocks.of_type(SERVICE)) >= 4  # it waited on a whole instance, not on nothing


def test_the_fingerprint_is_never_recorded_when_one_resource_fails():
    # In a Python of its own: the refused resource's dependents fail too, and asyncio reports each
    # of their futures on stderr whenever they are collected, long after this test.
    script = (
        "from tests.pulumi_mocks import resolve\n"
        "from tests.unit.test_completion import RefusingMocks, _instance_with\n"
        "seen = _instance_with(RefusingMocks())\n"
        "print('value' in seen, repr(seen.get('error')))\n"
        "try:\n    resolve(seen['hash'])\nexcept Exception as e:\n    print('unresolved:', e)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    first, unresolved = run.stdout.splitlines()
    assert first == "False RuntimeError('the object has been modified')", run.stderr[-2000:]
    assert unresolved == "unresolved: the object has been modified"
