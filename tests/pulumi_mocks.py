"""A fast unit-test harness for Pulumi programs and components: `pulumi.runtime.set_mocks`.

It records every resource the program registers so tests can assert a component's shape
(names, types, inputs, parents) without an engine. It never replaces the engine tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict
    parent: str | None


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Echoes inputs back as outputs (plus a few computed ones) and keeps a record."""

    resources: list[Registered] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = "x" * int(args.inputs.get("length", 16))
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs), args.custom))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]


def run_program(fn) -> None:
    """Run `fn` (a program or a component constructor) and wait until every registration settled."""
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    _sync_await(run_pulumi_func(fn))


def install_mocks(project: str = "iotistic", stack: str = "unit") -> RecordingMocks:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False)
    return mocks
