"""What a reconcile decides, without the engine: the plan, the licenses it signs, and bad input.

The deploys themselves are covered by tests/cluster/test_customer_stacks.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from automation.bookkeeping import DeployedStack
from automation.parallelism import DEPLOY_PEAK_MIB, auto_parallelism, memory_budget_mib
from automation.provision import SOURCE_SIGNUP, SOURCE_TENANTS_FILE, tenant_hash
from automation.reconcile import (
    LICENSE_DAYS,
    RENEW_WHEN_DAYS_LEFT,
    LicenseSigner,
    ReconcilePlan,
    plan_reconcile,
)
from licensing.keys import generate_private_key_pem, public_key_pem
from licensing.tokens import PemKeySource, sign_license, verify_license
from tenancy.schema import Tenant

ROOT = Path(__file__).resolve().parents[2]

ACME = Tenant("acme", "ops@acme.example", "ACME Corp", "starter")
GLOBEX = Tenant("globex", "it@globex.example", "Globex", "professional")
INITECH = Tenant("initech", "it@initech.example", "Initech", "enterprise")


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def deployed(
    tenant: Tenant | str,
    source: str | None = SOURCE_TENANTS_FILE,
    hash_: str | None = None,
    expires: datetime | None = NOW + timedelta(days=LICENSE_DAYS),
):
    """What the backend would say about a stack last deployed from `tenant` (or a bare stack name)."""
    name = tenant if isinstance(tenant, str) else tenant.id
    if hash_ is None and not isinstance(tenant, str):
        hash_ = tenant_hash(tenant)
    return DeployedStack(name, source, hash_, license_expires_at=expires)


def by_name(*stacks: DeployedStack) -> dict[str, DeployedStack]:
    return {s.name: s for s in stacks}


# --- plan_reconcile --------------------------------------------------------------------------------
def test_nothing_deployed_means_create_everything():
    assert plan_reconcile([ACME, GLOBEX], {}) == ReconcilePlan(create=[ACME, GLOBEX])


def test_an_unchanged_tenant_is_left_alone():
    assert plan_reconcile([ACME], by_name(deployed(ACME))) == ReconcilePlan(unchanged=["acme"])


@pytest.mark.parametrize(
    "changed",
    [
        replace(ACME, plan="professional"),
        replace(ACME, email="new@acme.example"),
        replace(ACME, company="ACME Inc"),
        replace(ACME, overrides={"images": {"api_tag": "1.4.2"}}),
    ],
    ids=["plan", "email", "company", "overrides"],
)
def test_any_change_to_a_tenant_is_an_update(changed):
    assert plan_reconcile([changed], by_name(deployed(ACME))) == ReconcilePlan(update=[changed])


def test_a_stack_without_a_recorded_hash_is_created_again():
    # E.g. the first deploy failed before the program exported its bookkeeping outputs.
    never_finished = DeployedStack("acme", None, None)
    assert plan_reconcile([ACME], {"acme": never_finished}) == ReconcilePlan(create=[ACME])


def test_a_stack_whose_last_update_was_interrupted_is_deployed_again():
    # Same fingerprint, but the engine was stopped with operations in flight.
    interrupted = replace(deployed(ACME), incomplete=True)
    assert plan_reconcile([ACME], by_name(interrupted)) == ReconcilePlan(update=[ACME])


def test_removed_tenants_are_reported_only_for_stacks_tenants_yaml_manages():
    stacks = by_name(
        deployed(ACME),
        deployed("old-tenant", SOURCE_TENANTS_FILE, "f00"),
        deployed("another-old", SOURCE_TENANTS_FILE, "ba4"),
        deployed("signup-customer", SOURCE_SIGNUP, "abc"),
        deployed("half-made", None, None),
    )
    plan = plan_reconcile([ACME], stacks)
    assert plan == ReconcilePlan(unchanged=["acme"], removed=["another-old", "old-tenant"])


def test_signup_stacks_are_never_removed_even_with_an_empty_file():
    stacks = by_name(deployed("s1", SOURCE_SIGNUP, "1"), deployed("s2", SOURCE_SIGNUP, "2"))
    assert plan_reconcile([], stacks) == ReconcilePlan()


def test_a_mixed_plan():
    changed_globex = replace(GLOBEX, plan="enterprise")
    stacks = by_name(deployed(ACME), deployed(GLOBEX), deployed("gone", SOURCE_TENANTS_FILE, "1"))
    assert plan_reconcile([ACME, changed_globex, INITECH], stacks) == ReconcilePlan(
        create=[INITECH], update=[changed_globex], unchanged=["acme"], removed=["gone"]
    )


def test_an_unchanged_tenant_whose_license_runs_out_within_30_days_is_renewed():
    soon = deployed(ACME, expires=NOW + timedelta(days=RENEW_WHEN_DAYS_LEFT - 1))
    later = deployed(GLOBEX, expires=NOW + timedelta(days=RENEW_WHEN_DAYS_LEFT + 1))
    expired = deployed(INITECH, expires=NOW - timedelta(days=1))
    plan = plan_reconcile([ACME, GLOBEX, INITECH], by_name(soon, later, expired), now=NOW)
    assert plan == ReconcilePlan(renew=[ACME, INITECH], unchanged=["globex"])


def test_a_stack_deployed_before_expiry_was_recorded_is_left_alone():
    assert plan_reconcile([ACME], by_name(deployed(ACME, expires=None)), now=NOW) == ReconcilePlan(
        unchanged=["acme"]
    )


def test_tenant_hash_is_stable_and_sees_every_field():
    assert tenant_hash(ACME) == tenant_hash(Tenant("acme", "ops@acme.example", "ACME Corp", "starter"))
    variants = {
        tenant_hash(t)
        for t in (
            ACME,
            replace(ACME, id="acme2"),
            replace(ACME, plan="enterprise"),
            replace(ACME, overrides={"storage": {"postgres_size": "20Gi"}}),
            replace(ACME, overrides={"storage": {"postgres_size": "30Gi"}}),
        )
    }
    assert len(variants) == 5


# --- LicenseSigner.license_for ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def signer() -> LicenseSigner:
    return LicenseSigner(generate_private_key_pem(), "platform-test")


def verified(signer: LicenseSigner, token: str, customer_id: str = "acme"):
    return verify_license(token, PemKeySource(public_key_pem(signer.private_pem)), customer_id=customer_id)


def test_a_new_tenant_gets_a_license_for_its_plan(signer):
    now = datetime.now(UTC)
    lic = verified(signer, signer.license_for(ACME, None, now))
    assert (lic.customer_id, lic.plan, lic.key_id) == ("acme", "starter", "platform-test")
    assert abs(lic.expires_at - (now + timedelta(days=LICENSE_DAYS))) < timedelta(seconds=2)


def test_a_valid_license_of_the_same_plan_is_kept_as_is(signer):
    # The same token means an unchanged Secret, so no pod of the customer restarts.
    now = datetime.now(UTC)
    current = signer.license_for(ACME, None, now)
    assert signer.license_for(ACME, current, now + timedelta(days=100)) == current
    assert signer.license_for(replace(ACME, company="ACME Inc"), current, now) == current


def test_a_plan_change_signs_a_license_of_the_new_plan(signer):
    now = datetime.now(UTC)
    current = signer.license_for(ACME, None, now)
    renewed = signer.license_for(replace(ACME, plan="professional"), current, now)
    assert renewed != current
    assert verified(signer, renewed).plan == "professional"


def test_a_license_close_to_expiry_is_renewed(signer):
    now = datetime.now(UTC)
    expiring = sign_license(
        signer.private_pem, kid=signer.kid, customer_id="acme", plan="starter", expires_at=now + timedelta(29)
    )
    renewed = signer.license_for(ACME, expiring, now)
    assert renewed != expiring
    assert verified(signer, renewed).expires_at > now + timedelta(days=LICENSE_DAYS - 1)
    # 31 days left is still far enough away: kept.
    later = sign_license(
        signer.private_pem, kid=signer.kid, customer_id="acme", plan="starter", expires_at=now + timedelta(31)
    )
    assert signer.license_for(ACME, later, now) == later


def test_a_license_that_ran_out_is_renewed(signer):
    now = datetime.now(UTC)
    current = signer.license_for(ACME, None, now - timedelta(days=LICENSE_DAYS + 1))
    renewed = signer.license_for(ACME, current, now)
    assert renewed != current
    assert verified(signer, renewed).expires_at > now


@pytest.mark.parametrize("case", ["garbage", "other key", "other customer", "truncated"])
def test_a_license_that_does_not_verify_is_replaced(signer, case):
    now = datetime.now(UTC)
    good = signer.license_for(ACME, None, now)
    bad = {
        "garbage": "not-a-jwt",
        "other key": sign_license(
            generate_private_key_pem(),
            kid=signer.kid,
            customer_id="acme",
            plan="starter",
            expires_at=now + timedelta(days=200),
        ),
        "other customer": signer.license_for(GLOBEX, None, now),
        "truncated": good[:-10],
    }[case]
    renewed = signer.license_for(ACME, bad, now)
    assert renewed != bad
    lic = verified(signer, renewed)
    assert (lic.customer_id, lic.plan) == ("acme", "starter")


# --- the command with an invalid tenants.yaml ------------------------------------------------------
INVALID = """\
tenants:
  - id: Acme
    email: ops@acme.example
    company: ACME
  - id: globex
    email: nope
    company: Globex
    plan: gold
  - id: globex
    email: it@globex.example
    company: Globex
    overrides:
      storage: {size: 1Gi}
"""


def run_reconcile(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m automation.reconcile` with its data folder and backend inside tmp_path."""
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(INVALID)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IOTISTIC_", "PULUMI_")) and k != "KUBECONFIG"
    }
    env["IOTISTIC_DATA"] = str(tmp_path / "data")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "automation.reconcile",
            "--tenants",
            str(tenants),
            "--backend",
            f"file://{tmp_path / 'state'}",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("args", [("--dry-run",), ("--parallel", "2", "--destroy-removed")])
def test_an_invalid_tenants_file_stops_the_command_before_anything_is_touched(tmp_path, args):
    # Without --dry-run and without any signing key: the file's problems still come first.
    proc = run_reconcile(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[1:] == [
        "  line 2: tenant 'Acme': id 'Acme' is not a DNS label "
        "(lowercase letters, digits and '-', 1-63 chars)",
        "  line 5: tenant 'globex': email 'nope' is not a valid email address",
        "  line 5: tenant 'globex': unknown plan 'gold' (plans: starter, professional, enterprise)",
        "  line 9: tenant 'globex': unknown key 'size' in overrides.storage (allowed: postgres_size, "
        "storage_class)",
        "  line 9: duplicate id 'globex' (first at line 5)",
    ]
    assert proc.stderr.startswith(f"error: {tmp_path / 'tenants.yaml'} is invalid:")
    assert proc.stdout == ""
    # No backend, no workspace, no passphrase: only the tenants file exists.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tenants.yaml"]


def test_a_tenants_entry_never_takes_over_a_signup_stack():
    tenant = Tenant("acme", "ops@acme.example", "ACME", "starter")
    signup = DeployedStack("acme", SOURCE_SIGNUP, None)
    plan = plan_reconcile([tenant], {"acme": signup})
    assert plan.conflicts == ["acme"]
    assert not plan.create and not plan.update and not plan.removed


# --- how many deploys at once --------------------------------------------------------------------
def test_parallelism_follows_the_memory_budget_not_a_fixed_number():
    assert auto_parallelism(1000, budget_mib=3072, cpus=8) == 3072 // DEPLOY_PEAK_MIB
    assert auto_parallelism(1000, budget_mib=1200, cpus=2) == 2
    assert auto_parallelism(1000, budget_mib=64_000, cpus=2) == 3  # one per CPU and one more
    assert auto_parallelism(1000, budget_mib=100, cpus=8) == 1  # always at least one
    assert auto_parallelism(2, budget_mib=64_000, cpus=8) == 2  # never more than the work


def test_the_budget_is_what_is_free_beyond_the_reserve_capped_at_3_gib(monkeypatch):
    monkeypatch.delenv("IOTISTIC_DEPLOY_MEMORY_MIB", raising=False)
    assert memory_budget_mib(available=24_000) == 3072
    assert memory_budget_mib(available=2_048) == 1024
    assert memory_budget_mib(available=512) == 0
    monkeypatch.setenv("IOTISTIC_DEPLOY_MEMORY_MIB", "1800")
    assert memory_budget_mib(available=24_000) == 1800


def test_a_bad_parallel_flag_is_named(tmp_path):
    proc = run_reconcile(tmp_path, "--parallel", "many")
    assert proc.returncode == 2
    assert "--parallel must be 'auto' or a whole number of at least 1, not 'many'" in proc.stderr
