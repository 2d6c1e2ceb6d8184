"""Stack bookkeeping read straight from checkpoint files: plain outputs only, secrets untouched."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

from automation.bookkeeping import DeployedStack, deployed_stacks, stack_outputs
from automation.workspace import StackSettings

SECRET = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "v1:abc"}


def checkpoint(outputs: dict) -> bytes:
    resources = [
        {
            "urn": "urn:pulumi:x::iotistic::pulumi:providers:kubernetes::cluster",
            "type": "pulumi:providers:kubernetes",
        },
        {
            "urn": "urn:pulumi:x::iotistic::pulumi:pulumi:Stack::iotistic-x",
            "type": "pulumi:pulumi:Stack",
            "outputs": outputs,
        },
    ]
    return json.dumps(
        {"version": 3, "checkpoint": {"stack": "organization/iotistic/x", "latest": {"resources": resources}}}
    ).encode()


def test_outputs_of_every_stack_come_from_the_checkpoints(tmp_path: Path):
    stacks = tmp_path / "state" / ".pulumi" / "stacks" / "iotistic"
    stacks.mkdir(parents=True)
    (stacks / "acme.json").write_bytes(
        checkpoint(
            {
                "source": "tenants.yaml",
                "tenantHash": "abc",
                "instanceUrl": "https://acme.iotistic.cloud",
                "licenseExpiresAt": "2027-11-27T12:00:00+00:00",
                "databasePassword": SECRET,
            }
        )
    )
    (stacks / "zipped.json.gz").write_bytes(
        gzip.compress(checkpoint({"source": "signup", "tenantHash": SECRET}))
    )
    (stacks / "half-made.json").write_bytes(json.dumps({"version": 3, "checkpoint": {"stack": "x"}}).encode())
    (stacks / "removed.json.bak").write_bytes(
        checkpoint({"source": "tenants.yaml"})
    )  # `stack rm` leaves this
    (tmp_path / "state" / ".pulumi" / "stacks" / "other-project").mkdir()
    settings = StackSettings.in_folder(tmp_path, "unused", None)
    assert deployed_stacks(settings) == {
        "acme": DeployedStack(
            "acme",
            "tenants.yaml",
            "abc",
            "https://acme.iotistic.cloud",
            datetime(2027, 11, 27, 12, tzinfo=UTC),
        ),
        "zipped": DeployedStack("zipped", "signup", None),
        "half-made": DeployedStack("half-made", None, None),
    }


def test_a_checkpoint_with_operations_in_flight_is_an_incomplete_deploy(tmp_path: Path):
    stacks = tmp_path / "state" / ".pulumi" / "stacks" / "iotistic"
    stacks.mkdir(parents=True)
    done = json.loads(checkpoint({"source": "tenants.yaml", "tenantHash": "abc"}))
    (stacks / "done.json").write_text(json.dumps(done))
    done["checkpoint"]["latest"]["pending_operations"] = [{"resource": {"type": "x"}, "type": "creating"}]
    (stacks / "killed.json").write_text(json.dumps(done))
    found = deployed_stacks(StackSettings.in_folder(tmp_path, "unused", None))
    assert not found["done"].incomplete
    assert found["killed"].incomplete and found["killed"].tenant_hash == "abc"


def test_one_stacks_plain_outputs_come_from_its_own_checkpoint(tmp_path: Path):
    stacks = tmp_path / "state" / ".pulumi" / "stacks" / "iotistic"
    stacks.mkdir(parents=True)
    (stacks / "acme.json.gz").write_bytes(
        gzip.compress(checkpoint({"instanceUrl": "https://acme.iotistic.cloud", "databasePassword": SECRET}))
    )
    (stacks / "acme-eu.json").write_bytes(checkpoint({"instanceUrl": "https://acme-eu.iotistic.cloud"}))
    settings = StackSettings.in_folder(tmp_path, "unused", None)
    assert stack_outputs(settings, "acme") == {"instanceUrl": "https://acme.iotistic.cloud"}
    assert stack_outputs(settings, "ghost") == {}


def test_an_empty_backend_has_no_stacks(tmp_path: Path):
    assert deployed_stacks(StackSettings.in_folder(tmp_path, "unused", None)) == {}


def test_the_same_bookkeeping_comes_from_an_s3_backend(moto_endpoint, no_ambient_aws, tmp_path):
    import boto3

    from automation.workspace import s3_backend_url

    creds = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )
    s3.create_bucket(Bucket="books")
    for i in range(25):
        s3.put_object(
            Bucket="books",
            Key=f".pulumi/stacks/iotistic/t{i:02d}.json",
            Body=checkpoint({"source": "tenants.yaml", "tenantHash": f"h{i}"}),
        )
    s3.put_object(Bucket="books", Key=".pulumi/stacks/iotistic/t00.json.bak", Body=b"{}")
    settings = StackSettings(
        s3_backend_url("books", endpoint=moto_endpoint), "unused", None, tmp_path, tuple(creds.items())
    )
    found = deployed_stacks(settings)
    assert sorted(found) == [f"t{i:02d}" for i in range(25)]
    assert found["t07"] == DeployedStack("t07", "tenants.yaml", "h7")
    # One stack by its prefix: t0 is not t00..t09.
    assert stack_outputs(settings, "t07") == {"source": "tenants.yaml", "tenantHash": "h7"}
    assert stack_outputs(settings, "t0") == {}
