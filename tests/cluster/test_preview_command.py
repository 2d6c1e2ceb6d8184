"""The preview command on the real engine: customer stacks deployed on the local control plane, a
git repository whose tenants.yaml and program files change, and the report a reviewer reads.

Stacks: two tenants.yaml customers (reconcile) and one signup customer (the worker's path). The
previews run against their real state, each in its own process, under the policy pack.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pulumi import automation as auto

from automation.preview import preview
from automation.preview_report import MARKER, render
from automation.provision import SOURCE_SIGNUP, up_customer
from automation.reconcile import LicenseSigner, reconcile
from automation.workspace import PROJECT_ROOT, StackSettings, open_stack
from licensing.keys import generate_private_key_pem
from tenancy.schema import Tenant

pytestmark = pytest.mark.engine
TAG = f"pv{secrets.token_hex(2)}"
ACME, GLOBEX, SIGNUP = f"{TAG}-acme", f"{TAG}-globex", f"{TAG}-signup"
TENANTS = f"""\
tenants:
  - id: {ACME}
    email: ops@acme.example
    company: ACME Corp
    plan: starter
    overrides:
      storage: {{storage_class: standard}}
  - id: {GLOBEX}
    email: it@globex.example
    company: Globex
    plan: professional
    overrides:
      storage: {{storage_class: standard}}
      images: {{api_tag: "1.0.0"}}
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def env(tmp_path_factory, cluster):
    root = tmp_path_factory.mktemp("preview")
    settings = StackSettings.in_folder(root, "preview-passphrase", str(cluster.kubeconfig))
    signer = LicenseSigner(generate_private_key_pem(), "preview-1")
    repo = root / "repo"
    (repo / "components").mkdir(parents=True)
    (repo / "docs").mkdir()
    (repo / "tenants.yaml").write_text(TENANTS)
    (repo / "components" / "instance.py").write_text("# the program\n")
    (repo / "docs" / "guide.md").write_text("# guide\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "empty")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "base")
    deployed = reconcile(repo / "tenants.yaml", settings, signer, parallel=2, destroy_removed=False)
    assert all(r.ok for r in deployed), [r.error for r in deployed]
    # Signup customers have no overrides (the billing database has none to give).
    signup = Tenant(SIGNUP, "new@signup.example", "Signup GmbH", "starter")
    license_key = signer.license_for(signup, None, datetime.now(UTC))
    up = up_customer(signup, license_key, settings, source=SOURCE_SIGNUP)
    assert up.ok, up.error
    yield settings, signer, repo
    (repo / "tenants.yaml").write_text("tenants: []\n")
    reconcile(repo / "tenants.yaml", settings, signer, parallel=2, destroy_removed=True)
    from automation.provision import destroy_customer

    destroy_customer(SIGNUP, settings)


@pytest.fixture
def repo(env):
    """The repository back at its base commit after each test."""
    settings, signer, repo = env
    yield repo
    git(repo, "reset", "-q", "--hard", "main")
    git(repo, "clean", "-qfd")


def run(env, **kwargs):
    settings, signer, repo = env
    report = preview(repo, "main", repo / "tenants.yaml", settings, signer, parallel=3, **kwargs)
    return report, render(report)


def cli(env, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m automation.preview` as CI runs it, on this test's backend and cluster."""
    settings, _, repo = env
    process_env = {
        **os.environ,
        "IOTISTIC_BACKEND_URL": settings.backend_url,
        "PULUMI_CONFIG_PASSPHRASE": settings.passphrase,
        "IOTISTIC_KUBECONFIG": settings.kubeconfig,
        "IOTISTIC_STACK_CONFIG_DIR": str(settings.stack_config_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "automation.preview", "--base", "main", "--repo", str(repo), *args],
        cwd=PROJECT_ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def steps(report, stack: str) -> dict[str, dict]:
    result = next(r for r in report.results if r.stack == stack)
    return {f"{s['type'].rsplit(':', 1)[-1]} {s['name']}": s for s in result.details["steps"]}


def test_no_change_says_no_changes_and_exits_0(env, repo):
    proc = cli(env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(MARKER) and "**No changes**" in proc.stdout
    # Docs and tests only: still nothing affected.
    (repo / "docs" / "guide.md").write_text("# guide, reworded\n")
    report, text = run(env)
    assert report.results == [] and "**No changes**: no stack is affected" in text


def test_a_plan_change_names_exactly_that_customer_and_the_changed_fields(env, repo):
    (repo / "tenants.yaml").write_text(TENANTS.replace("plan: starter", "plan: professional", 1))
    report, text = run(env)
    assert [r.stack for r in report.results] == [ACME]
    assert GLOBEX not in text and SIGNUP not in text
    result = report.results[0]
    assert result.ok and result.changes == {"update": 3}, (result.changes, result.error)
    changed = steps(report, ACME)
    labels = changed[f"Namespace customer-{ACME}"]["diffs"]
    assert {"path": 'metadata.labels["iotistic.io/plan"]', "kind": "update", "before": "starter",
            "after": "professional"} in labels  # fmt: skip
    secret = changed[f"Secret customer-{ACME}/instance-secrets"]["diffs"]
    assert [d["path"] for d in secret] == ["data.IOTISTIC_LICENSE_KEY"]
    assert secret[0]["before"] == secret[0]["after"] == "[secret]"  # a new license, never shown
    assert f"Deployment customer-{ACME}/api" in changed
    assert "eyJ" not in text, "a license leaked into the report"
    assert f"| `{ACME}` | tenants.yaml entry changed (plan) | 0 | 3 | 0 | 0 |" in text
    assert 'metadata.labels["iotistic.io/plan"]' in text and "`starter` | `professional`" in text


def test_a_change_to_components_previews_every_stack_even_without_local_config(env, repo):
    settings, _, _ = env
    (repo / "components" / "instance.py").write_text("# the program, changed\n")
    # As on a CI machine: no stacks/ config; the previews rebuild it from the tenants file and the
    # state (the signup customer's email, plan and license; the tenants' current licenses).
    for config in settings.stack_config_dir.glob("Pulumi.*.yaml"):
        config.rename(config.with_suffix(".yaml.away"))
    try:
        report, text = run(env)
    finally:
        for config in settings.stack_config_dir.glob("Pulumi.*.yaml.away"):
            config.rename(config.with_suffix("").with_suffix(".yaml"))
    assert sorted(r.stack for r in report.results) == sorted([ACME, GLOBEX, SIGNUP])
    for r in report.results:
        assert r.ok and r.changes == {}, (r.stack, r.changes, r.error)
    assert text.count("the program changed") == 3
    assert "**No changes** in the 3 affected stack(s)" in text
    assert not list(settings.stack_config_dir.glob("Pulumi.*.yaml.away"))


def test_replacing_postgres_is_flagged_at_the_top_and_refused(env, repo):
    (repo / "tenants.yaml").write_text(
        TENANTS.replace(
            "storage: {storage_class: standard}\n      images",
            "storage: {storage_class: standard, postgres_size: 20Gi}\n      images",
        )  # fmt: skip
    )
    report, text = run(env)
    [result] = report.results
    assert result.stack == GLOBEX and not result.ok
    sts = steps(report, GLOBEX)[f"StatefulSet customer-{GLOBEX}/postgres"]
    assert sts["op"] == "replace" and sts["stateful"] and sts["refused"]
    assert sts["volume"] == "volume data grows from 10Gi to 20Gi"
    top = text.split("| stack |")[0]
    assert "### ⚠️ Stateful resources would be replaced or deleted" in top
    assert f"StatefulSet `customer-{GLOBEX}/postgres` would be replaced — volume data grows" in top
    assert "**refused: the resource is protected**" in top
    assert "unable to replace resource" in result.error


def test_the_explicit_override_lets_postgres_be_replaced(env, repo, cluster):
    settings, _, _ = env
    stack = open_stack(GLOBEX, settings)
    stack.set_config("iotistic:allowStatefulReplacement", auto.ConfigValue("true"))
    bigger = "storage: {storage_class: standard, postgres_size: 20Gi}\n      images"
    (repo / "tenants.yaml").write_text(
        TENANTS.replace("storage: {storage_class: standard}\n      images", bigger)
    )
    api = cluster.api()
    sts_path = f"/apis/apps/v1/namespaces/customer-{GLOBEX}/statefulsets/postgres"
    before = api.get(sts_path)["metadata"]["uid"]
    try:
        report, text = run(env)
        # ...and the deploy path carries the replacement out.
        _, signer, _ = env
        deployed = reconcile(repo / "tenants.yaml", settings, signer, parallel=1, destroy_removed=False)
    finally:
        stack.remove_config("iotistic:allowStatefulReplacement")
    [result] = report.results
    sts = steps(report, GLOBEX)[f"StatefulSet customer-{GLOBEX}/postgres"]
    assert sts["op"] == "replace" and not sts["refused"], result.error
    top = text.split("| stack |")[0]
    assert f"StatefulSet `customer-{GLOBEX}/postgres` would be replaced — volume data grows" in top
    assert "**refused" not in top
    assert [(r.stack, r.ok) for r in deployed if r.action == "update"] == [(GLOBEX, True)], [
        r.error for r in deployed
    ]
    replaced = api.get(sts_path)
    assert replaced["metadata"]["uid"] != before
    assert replaced["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_a_policy_violation_exits_non_zero_with_the_rules_message(env, repo):
    settings, _, _ = env
    newcomer = f"{TAG}-initech"
    entry = (
        f"  - id: {newcomer}\n    email: it@initech.example\n    company: Initech\n    plan: professional\n"
    )
    small = "    overrides:\n      storage: {storage_class: standard, postgres_size: 5Gi}\n"
    (repo / "tenants.yaml").write_text(TENANTS + entry + small)
    output = repo.parent / "report.md"
    proc = cli(env, "--output", str(output))
    assert proc.returncode == 1, proc.stderr
    text = output.read_text()
    top = text.split("| stack |")[0]
    assert "### ❌ Failed previews and mandatory policy violations" in top
    assert (
        f"`{newcomer}`: mandatory policy `postgres-volume-size`: volume data of StatefulSet "
        f"customer-{newcomer}/postgres is 5Gi, smaller than the professional plan's 10Gi"
    ) in top, text
    [row] = [line for line in text.splitlines() if line.startswith(f"| `{newcomer}` |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "added to tenants.yaml" and int(cells[2]) >= 25 and cells[3:6] == ["0", "0", "0"], row
    assert cells[6].startswith("1 mandatory") and cells[7] == "**failed**", row
    # The preview of a new customer leaves no empty stack behind.
    from automation.workspace import list_stacks

    assert newcomer not in list_stacks(settings)


def test_shrinking_postgres_is_flagged_and_refused(env, repo):
    (repo / "tenants.yaml").write_text(
        TENANTS.replace(
            "storage: {storage_class: standard}\n  - id",
            "storage: {storage_class: standard, postgres_size: 5Gi}\n  - id",
        )  # fmt: skip
    )
    report, text = run(env)
    [result] = report.results
    assert result.stack == ACME and not result.ok
    top = text.split("| stack |")[0]
    assert (
        f"StatefulSet `customer-{ACME}/postgres` would be replaced — volume data shrinks from 10Gi to 5Gi"
    ) in top
    assert "**refused: the resource is protected**" in top


def test_a_removed_tenant_lists_what_its_destroy_would_delete(env, repo):
    (repo / "tenants.yaml").write_text(TENANTS.split(f"  - id: {GLOBEX}")[0])
    report, text = run(env)
    [result] = report.results
    assert result.stack == GLOBEX and result.action == "preview-destroy" and result.ok
    assert result.changes["delete"] >= 20
    top = text.split("| stack |")[0]
    for what in (f"Namespace `customer-{GLOBEX}`", f"StatefulSet `customer-{GLOBEX}/postgres`"):
        assert f"`{GLOBEX}`: {what} would be deleted" in top
