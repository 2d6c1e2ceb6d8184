"""One source of stack config: the plain CLI run from the project root sees what reconcile deployed.

A platform engineer sources scripts/env.sh and runs `pulumi stack ls`, `preview`, `refresh` and
`up -s <customer>` from the root; they must find the backend and passphrase, read the same
Pulumi.<stack>.yaml that reconcile wrote (license included), and see no changes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from automation.reconcile import LicenseSigner, reconcile
from automation.workspace import PROJECT_ROOT, StackSettings, project_config_dir
from licensing.keys import generate_private_key_pem

pytestmark = pytest.mark.engine


def cli(data: Path, backend: str, command: str) -> subprocess.CompletedProcess[str]:
    """`source scripts/env.sh && <command>` from the project root, as a user types it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PULUMI_") and k not in ("IOTISTIC_BACKEND_URL", "IOTISTIC_DATA")
    }
    env.update(IOTISTIC_DATA=str(data), IOTISTIC_BACKEND_URL=backend)
    return subprocess.run(
        ["bash", "-c", f"source scripts/env.sh && {command}"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def reconciled(tmp_path, cluster):
    """One tenant reconciled into a throw-away backend, with its config in the project's stacks/."""
    data = tmp_path / "data"
    backend = f"file://{tmp_path / 'state'}"
    (tmp_path / "state").mkdir()
    # What env.sh generates for a new data folder, made here so reconcile and the CLI share it.
    data.mkdir()
    (data / "passphrase").write_text(secrets.token_urlsafe(24) + "\n")
    settings = StackSettings(
        backend_url=backend,
        passphrase=(data / "passphrase").read_text().strip(),
        kubeconfig=str(cluster.kubeconfig),
        work_root=tmp_path / "workspaces",
        config_dir=project_config_dir(),
    )
    name = f"cli-{secrets.token_hex(3)}"
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  - {{id: {name}, email: ops@cli.example, company: CLI Ltd}}\n")
    signer = LicenseSigner(generate_private_key_pem(), "cli-1")
    results = reconcile(tenants, settings, signer, parallel=1, destroy_removed=False)
    assert [r.ok for r in results] == [True], [r.error for r in results]
    yield data, backend, name
    tenants.write_text("tenants: []\n")
    reconcile(tenants, settings, signer, parallel=1, destroy_removed=True)
    assert not (project_config_dir() / f"Pulumi.{name}.yaml").exists(), "destroy left the config file"


def test_plain_cli_from_the_root_sees_the_reconciled_stack_unchanged(reconciled):
    data, backend, name = reconciled
    config_file = project_config_dir() / f"Pulumi.{name}.yaml"
    text = config_file.read_text()
    assert "iotistic:licenseKey:" in text and "secure:" in text and "encryptionsalt:" in text
    assert "eyJ" not in text, "the license must be stored encrypted"

    listed = cli(data, backend, "pulumi stack ls --non-interactive")
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout

    preview = cli(data, backend, f"pulumi preview -s {name} --expect-no-changes --non-interactive")
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert "kubeconfig" not in preview.stdout  # the provider keeps its cluster: nothing to drop
    # env.sh runs the CLI's previews and ups under the project's policy pack, like every other path.
    assert "iotistic@v1.0.0 (local: " in preview.stdout, preview.stdout

    refresh = cli(data, backend, f"pulumi refresh -s {name} --yes --skip-preview --non-interactive")
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr
    up = cli(data, backend, f"pulumi up -s {name} --yes --expect-no-changes --non-interactive")
    assert up.returncode == 0, up.stdout + up.stderr


def test_env_sh_points_the_cli_at_the_data_folder_backend(tmp_path):
    """A new data folder: env.sh makes the state folder and a passphrase (owner-only), once."""
    data = tmp_path / "data"
    env = cli(data, "", "echo $PULUMI_BACKEND_URL $PULUMI_CONFIG_PASSPHRASE_FILE")
    # An empty IOTISTIC_BACKEND_URL means "the default".
    assert env.returncode == 0, env.stderr
    backend, passfile = env.stdout.split()
    assert backend == f"file://{data}/pulumi-state" and Path(passfile) == data / "passphrase"
    assert (data / "pulumi-state").is_dir()
    first = (data / "passphrase").read_text()
    assert len(first.strip()) >= 24 and (data / "passphrase").stat().st_mode & 0o077 == 0
    cli(data, "", "true")
    assert (data / "passphrase").read_text() == first
