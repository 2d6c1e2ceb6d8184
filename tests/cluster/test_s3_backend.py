"""Customer stacks on an S3 backend (moto server standing in for S3) and the local control plane.

The bucket is created with versioning on (every state write is kept), the stack's state lives in
it, a re-run deploys nothing, and destroying the customer removes its namespace. One deploy and
one destroy: the rest of the reconcile behaviour is covered on the file backend.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import boto3
import pytest

from automation.provision import deployed_license
from automation.reconcile import LicenseSigner, reconcile
from automation.workspace import StackSettings, ensure_s3_backend, s3_backend_url
from licensing.keys import generate_private_key_pem
from tests.cluster.conftest import wait_until

pytestmark = pytest.mark.engine

# Dummy credentials: moto accepts any; they must still reach boto3 and the engine.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "s3t-access-key",
    "AWS_SECRET_ACCESS_KEY": "s3t-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def aws_env(no_ambient_aws, monkeypatch) -> None:
    """Dummy credentials in the environment, as an operator running the command would have them."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def bucket_name() -> str:
    return f"s3t-state-{secrets.token_hex(4)}"


def keys_under(s3, bucket: str, prefix: str = ".pulumi/") -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_ensure_s3_backend_creates_a_versioned_bucket_once(moto_endpoint, aws_env):
    s3 = s3_client(moto_endpoint)
    bucket = bucket_name()
    url = s3_backend_url(bucket, endpoint=moto_endpoint)
    assert url == (
        f"s3://{bucket}?region=us-east-1&endpoint={moto_endpoint.removeprefix('http://')}"
        "&use_path_style=true&disable_https=true"
    )

    ensure_s3_backend(url)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    # A second run (every reconcile makes one) keeps the bucket and what is in it.
    s3.put_object(Bucket=bucket, Key=".pulumi/meta.yaml", Body=b"version: 1\n")
    ensure_s3_backend(url)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert keys_under(s3, bucket) == [".pulumi/meta.yaml"]
    assert s3.get_object(Bucket=bucket, Key=".pulumi/meta.yaml")["Body"].read() == b"version: 1\n"


def test_reconcile_uses_the_credentials_given_in_the_settings(moto_endpoint, no_ambient_aws, tmp_path):
    # A caller (e.g. a service) may hand credentials over in StackSettings only, not in os.environ.
    bucket = bucket_name()
    settings = StackSettings(
        backend_url=s3_backend_url(bucket, endpoint=moto_endpoint),
        passphrase="s3t-passphrase",
        kubeconfig=None,
        work_root=tmp_path / "workspaces",
        extra_env=tuple(CREDENTIALS.items()),
    )
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants: []\n")
    assert reconcile(tenants, settings, None, parallel=1, destroy_removed=False, dry_run=True) == []
    assert s3_client(moto_endpoint).get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


@pytest.fixture
def s3_customer(moto_endpoint, aws_env, monkeypatch, cluster, tmp_path):
    """Settings as `python -m automation.reconcile --backend s3://…` builds them, plus one tenant."""
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "s3t-passphrase")  # no passphrase file written
    bucket = bucket_name()
    settings = StackSettings.from_env(s3_backend_url(bucket, endpoint=moto_endpoint), str(cluster.kubeconfig))
    settings = replace(settings, work_root=tmp_path / "workspaces")
    customer = f"s3t-{secrets.token_hex(3)}"
    tenants = tmp_path / "tenants.yaml"
    signer = LicenseSigner(generate_private_key_pem(), "s3t-1")
    yield settings, bucket, customer, tenants, signer
    # Leave the shared cluster clean even when an assertion failed half-way.
    if cluster.api().get(f"/api/v1/namespaces/customer-{customer}") is not None:
        tenants.write_text("tenants: []\n")
        reconcile(tenants, settings, signer, parallel=1, destroy_removed=True)


def test_a_customer_on_the_s3_backend(s3_customer, moto_endpoint, cluster):
    settings, bucket, customer, tenants, signer = s3_customer
    api = cluster.api()
    s3 = s3_client(moto_endpoint)
    # from_env passes the operator's AWS_* variables on to the engine.
    assert dict(settings.extra_env)["AWS_ACCESS_KEY_ID"] == CREDENTIALS["AWS_ACCESS_KEY_ID"]

    tenants.write_text(
        f"tenants:\n  - id: {customer}\n    email: ops@{customer}.example\n    company: S3 Test\n"
    )
    (created,) = reconcile(tenants, settings, signer, parallel=1, destroy_removed=False)
    assert (created.stack, created.action, created.ok) == (customer, "create", True), created.error
    assert created.outputs["namespace"] == f"customer-{customer}"
    assert api.get(f"/api/v1/namespaces/customer-{customer}") is not None
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    # The state is in the bucket, with its history kept by versioning, and its secrets encrypted.
    state_key = f".pulumi/stacks/iotistic/{customer}.json"
    assert state_key in keys_under(s3, bucket)
    versions = s3.list_object_versions(Bucket=bucket, Prefix=state_key)["Versions"]
    assert len(versions) >= 2
    state = s3.get_object(Bucket=bucket, Key=state_key)["Body"].read().decode()
    assert f"customer-{customer}" in state
    license_key = deployed_license(customer, settings)
    assert license_key and license_key not in state

    (again,) = reconcile(tenants, settings, signer, parallel=1, destroy_removed=False)
    assert (again.stack, again.action) == (customer, "none (unchanged)")

    tenants.write_text("tenants: []\n")
    (gone,) = reconcile(tenants, settings, signer, parallel=1, destroy_removed=True)
    assert (gone.stack, gone.action, gone.ok) == (customer, "destroy", True), gone.error
    wait_until(
        lambda: api.get(f"/api/v1/namespaces/customer-{customer}") is None,
        120,
        f"namespace customer-{customer} to be deleted",
    )
    assert state_key not in keys_under(s3, bucket)
