"""`once_deployed`: the bookkeeping the reconcile command trusts resolves only after the whole
instance is deployed. The real failure and re-run: tests/cluster/test_failed_deploys.py."""

from __future__ import annotations

import asyncio
import gc

import pulumi
import pytest

from components import CustomerInstance, CustomerInstanceArgs, Storage
from components.completion import once_deployed
from tests.pulumi_mocks import RecordingMocks, resolve, run_program

SERVICE = "kubernetes:core/v1:Service"


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
        instance = CustomerInstance(
            "acme",
            CustomerInstanceArgs(
                customer_id="acme",
                email="ops@acme.example",
                company_name="ACME",
                license_key=pulumi.Output.secret("jwt"),
                storage=Storage(storage_class="standard"),
            ),
        )
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
    loop = asyncio.get_event_loop()
    loop.set_exception_handler(lambda *_: None)  # the refused resource's dependents fail too
    try:
        seen = _instance_with(RefusingMocks())
        assert "value" not in seen and "error" in seen
        with pytest.raises(Exception, match="the object has been modified"):
            resolve(seen["hash"])
        del seen
        # Drop the runtime's references to the failed registrations while the handler is quiet.
        pulumi.runtime.set_mocks(RecordingMocks(), project="iotistic", stack="acme", preview=False)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
