"""Secrets sealed in this process (automation.stack_secrets) are ones the real engine decrypts, and
a stack's own salt is never overwritten (file backend, no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto

from automation import stack_secrets
from automation.deploy import DeployJob, sealed
from automation.stack_secrets import SealedValue, WrongPassphrase
from automation.workspace import StackSettings, open_stack, set_plain_config, stack_config_file
from tenancy.schema import Tenant

pytestmark = pytest.mark.engine

PASSPHRASE = "correct horse battery staple"
KEY = "iotistic:licenseKey"
LICENSE = "eyJhbGciOiJSUzI1NiJ9.eyJjdXN0b21lcklkIjoiYWNtZSJ9.c2lnbmF0dXJl"


def test_a_secret_sealed_here_is_decrypted_by_the_engine(tmp_path: Path):
    settings = StackSettings.in_folder(tmp_path, PASSPHRASE, None)
    sealer = stack_secrets.folder_sealer(PASSPHRASE, settings.stack_config_dir)

    stack = open_stack("acme", settings, encryption_salt=sealer.state)
    config = stack_config_file("acme", settings)
    assert yaml.safe_load(config.read_text())["encryptionsalt"] == sealer.state  # `stack init` kept it

    assert set_plain_config("acme", settings, {}, {KEY: SealedValue(sealer.state, sealer.seal(LICENSE))})
    assert LICENSE not in config.read_text()
    value = stack.get_config(KEY)  # `pulumi config get`: the engine's own decryption
    assert (value.value, value.secret) == (LICENSE, True)


def test_a_stack_with_its_own_salt_is_left_to_the_cli(tmp_path: Path):
    settings = StackSettings.in_folder(tmp_path, PASSPHRASE, None)
    open_stack("globex", settings)  # the engine picks the salt
    config = stack_config_file("globex", settings)
    before = config.read_text()

    sealer = stack_secrets.folder_sealer(PASSPHRASE, settings.stack_config_dir)
    assert sealer.state not in before
    sealed = {KEY: SealedValue(sealer.state, sealer.seal(LICENSE))}
    assert not set_plain_config("globex", settings, {}, sealed)
    assert config.read_text() == before


def test_a_stack_made_elsewhere_keeps_the_salt_of_its_state(tmp_path: Path):
    """Two machines share a backend, each with its own config folder: the second one finds no
    config file, tries to create the stack, and must not leave its own salt behind."""
    first = StackSettings.in_folder(tmp_path, PASSPHRASE, None)
    open_stack("acme", first).set_config(KEY, auto.ConfigValue(LICENSE, secret=True))
    second = StackSettings(first.backend_url, PASSPHRASE, None, tmp_path / "other" / "workspaces")
    sealer = stack_secrets.folder_sealer(PASSPHRASE, second.stack_config_dir)

    stack = open_stack("acme", second, encryption_salt=sealer.state)
    assert stack.name == "acme"
    path = stack_config_file("acme", second)
    assert not path.exists() or sealer.state not in path.read_text()


def test_the_folder_salt_is_made_once_and_checked_against_the_passphrase(tmp_path: Path):
    first = stack_secrets.folder_sealer(PASSPHRASE, tmp_path)
    assert stack_secrets.folder_sealer(PASSPHRASE, tmp_path).state == first.state
    assert [p.name for p in tmp_path.iterdir()] == [stack_secrets.SALT_FILE]  # no temporary file left
    with pytest.raises(WrongPassphrase):
        stack_secrets.folder_sealer("another passphrase", tmp_path)
    with pytest.raises(WrongPassphrase):
        first.unseal(stack_secrets.Sealer(first.state, b"\0" * 32).seal(LICENSE))


def test_a_deploy_job_carries_its_sealed_license_but_never_shows_it(tmp_path: Path):
    settings = StackSettings.in_folder(tmp_path, PASSPHRASE, None)
    job = sealed(DeployJob("up", "acme", settings, Tenant("acme", "a@acme.io", "Acme", "starter"), LICENSE))
    assert job.sealed_license is not None
    assert LICENSE not in repr(job) and job.sealed_license.value not in repr(job)
    again = DeployJob.from_json(job.to_json())
    assert again.sealed_license == job.sealed_license
    sealer = stack_secrets.sealer_for(PASSPHRASE, job.sealed_license.salt)
    assert sealer.unseal(job.sealed_license.value) == LICENSE

    # A folder salt this passphrase cannot open: the job goes as it is, the child's CLI stores it.
    other = StackSettings.in_folder(tmp_path, "another passphrase", None)
    assert sealed(DeployJob("up", "acme", other, job.tenant, LICENSE)).sealed_license is None
