"""A fast unit-test harness for Pulumi programs and components: `pulumi.runtime.set_mocks`.

It records every resource the program registers so tests can assert a component's shape
(names, types, inputs, parents) without an engine. It never replaces the engine tests.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pulumi

SECRET_SIG = "4dabf18193072939515e22adb298388d"


def unwrap_secrets(value):
    """Mocks see secrets as {sig: ..., value: ...}; tests assert on the values inside."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return unwrap_secrets(value["value"])
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict
    raw_inputs: dict  # as the engine would see them: secrets still wrapped

    def is_secret(self, *path: str) -> bool:
        value = self.raw_inputs
        for key in path:
            if isinstance(value, dict) and value.get(SECRET_SIG) and key not in value:
                return True  # a secret container: everything inside it is secret
            value = value[key]
        return isinstance(value, dict) and SECRET_SIG in value


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Echoes inputs back as outputs (plus a few computed ones) and keeps a record."""

    resources: list[Registered] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = unwrap_secrets(dict(args.inputs))
        outputs = dict(inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = "p" * int(inputs.get("length", 16))
        elif args.typ == "random:index/randomBytes:RandomBytes":
            outputs["base64"] = base64.b64encode(b"s" * int(inputs["length"])).decode()
        self.resources.append(Registered(args.typ, args.name, inputs, dict(args.inputs)))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str) -> Registered:
        """The resource of `typ` whose Kubernetes name (or Pulumi name) is `name`."""
        found = [r for r in self.of_type(typ) if r.inputs.get("metadata", {}).get("name", r.name) == name]
        assert len(found) == 1, f"expected one {typ} named {name!r}, found {len(found)}"
        return found[0]


def run_program(fn) -> None:
    """Run `fn` (a program or a component constructor) and wait until every registration settled."""
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    _sync_await(run_pulumi_func(fn))


def resolve(output: pulumi.Output) -> tuple[object, bool]:
    """The value of a settled Output and whether it is a secret."""
    from pulumi.runtime.sync_await import _sync_await

    return _sync_await(output.future()), _sync_await(output.is_secret())


def install_mocks(project: str = "iotistic", stack: str = "unit") -> RecordingMocks:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False)
    return mocks


def acme_instance(**args):
    """The customer "acme"'s CustomerInstance with the given CustomerInstanceArgs on top of the
    minimum (id, email, company, a secret license); for unit tests under install_mocks()."""
    from components import CustomerInstance, CustomerInstanceArgs

    return CustomerInstance(
        "acme",
        CustomerInstanceArgs(
            customer_id="acme",
            email="ops@acme.example",
            company_name="ACME Corp",
            license_key=pulumi.Output.secret("license-jwt"),
            **args,
        ),
    )
