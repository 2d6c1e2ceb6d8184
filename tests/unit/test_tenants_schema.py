"""tenants.yaml validation: every problem is reported at once, each with the line it is on.

A platform engineer fixes a broken file in one pass, so one error must never hide another.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import tenancy.schema
from components.args import Networking, Storage
from tenancy.schema import MAX_ID_LENGTH, Tenant, TenantsFileError, load_tenants, parse_tenants

ROOT = Path(__file__).resolve().parents[2]

VALID = """\
defaults:
  storage: {storage_class: standard, postgres_size: 20Gi}
  networking: {base_domain: iotistic.test}
tenants:
  - id: acme
    email: ops@acme.example
    company: ACME Corp
    plan: professional
    overrides:
      storage: {postgres_size: 50Gi}
      images: {api_tag: "1.4.2"}
  - id: globex
    email: it@globex.example
    company: Globex
"""


def problems_of(text: str) -> list[str]:
    """The problems parse_tenants reports for `text` (the test fails if it accepts the file)."""
    with pytest.raises(TenantsFileError) as err:
        parse_tenants(text, "tenants.yaml")
    return err.value.problems


def tenant_yaml(**fields: str) -> str:
    """One tenant entry (starting at line 2 of the file) with valid defaults for missing fields."""
    entry = {"id": "acme", "email": "ops@acme.example", "company": "ACME", **fields}
    body = "\n".join(f"    {k}: {v}" for k, v in entry.items())
    return "tenants:\n" + "  -" + body[3:] + "\n"


# --- valid files -----------------------------------------------------------------------------------
def test_valid_file_gives_tenants_in_file_order():
    tenants = parse_tenants(VALID)
    assert [t.id for t in tenants] == ["acme", "globex"]
    assert tenants[0] == Tenant(
        id="acme",
        email="ops@acme.example",
        company="ACME Corp",
        plan="professional",
        overrides={
            "storage": {"storage_class": "standard", "postgres_size": "50Gi"},
            "networking": {"base_domain": "iotistic.test"},
            "images": {"api_tag": "1.4.2"},
        },
    )


def test_plan_defaults_to_starter():
    assert parse_tenants(VALID)[1].plan == "starter"


def test_defaults_are_merged_under_each_tenants_overrides():
    acme, globex = parse_tenants(VALID)
    # The tenant's own value wins; keys it does not set come from defaults.
    assert acme.storage() == Storage(storage_class="standard", postgres_size="50Gi")
    assert globex.storage() == Storage(storage_class="standard", postgres_size="20Gi")
    assert acme.networking().base_domain == globex.networking().base_domain == "iotistic.test"
    # Sections only the tenant sets stay the tenant's own.
    assert acme.images().api_tag == "1.4.2"
    assert globex.images().api_tag == "latest"


def test_networking_overrides_become_component_inputs():
    text = tenant_yaml(overrides="{networking: {cluster_cidrs: [10.1.0.0/16, 10.2.0.0/16]}}")
    (tenant,) = parse_tenants(text)
    assert tenant.networking() == Networking(cluster_cidrs=("10.1.0.0/16", "10.2.0.0/16"))


@pytest.mark.parametrize("text", ["", "tenants:\n", "tenants: []\n", "# only a comment\n"])
def test_empty_files_mean_no_tenants(text):
    assert parse_tenants(text) == []


def test_the_repositorys_tenants_yaml_is_valid():
    tenants = load_tenants(ROOT / "tenants.yaml")
    assert all(isinstance(t, Tenant) for t in tenants)
    assert len({t.id for t in tenants}) == len(tenants)


# --- one problem at a time: the message and its line -----------------------------------------------
def test_duplicate_id_names_both_lines():
    text = VALID + "  - id: acme\n    email: other@acme.example\n    company: ACME again\n"
    assert problems_of(text) == ["line 15: duplicate id 'acme' (first at line 5)"]


@pytest.mark.parametrize("bad_id", ["Acme", "acme_corp", "-acme", "acme-", "a.b", "''", "x" * 64, "42"])
def test_id_must_be_a_dns_label(bad_id):
    (problem,) = problems_of(tenant_yaml(id=bad_id))
    assert problem.startswith("line 2: ")
    assert "is not a DNS label" in problem


def test_id_too_long_for_the_namespace_name():
    # 54 characters make "customer-<id>" exactly 63, the longest DNS label; one more is refused.
    assert MAX_ID_LENGTH == 54
    assert parse_tenants(tenant_yaml(id="a" * 54))[0].id == "a" * 54
    long_id = "a" * 55
    assert problems_of(tenant_yaml(id=long_id)) == [
        f"line 2: tenant '{long_id}': id '{long_id}' is longer than 54 characters "
        f"(namespace customer-{long_id})"
    ]


def test_unknown_plan_lists_the_plans():
    assert problems_of(tenant_yaml(plan="gold")) == [
        "line 2: tenant 'acme': unknown plan 'gold' (plans: starter, professional, enterprise)"
    ]


@pytest.mark.parametrize("email", ["nope", "a@b", "a b@c.io", "'@acme.example'", "''"])
def test_bad_email(email):
    (problem,) = problems_of(tenant_yaml(email=email))
    assert problem.startswith("line 2: tenant 'acme': email ")
    assert problem.endswith("is not a valid email address")


def test_company_is_required():
    text = "tenants:\n  - id: acme\n    email: ops@acme.example\n"
    assert problems_of(text) == ["line 2: tenant 'acme': company is required"]


def test_unknown_key_in_an_entry():
    assert problems_of(tenant_yaml(colour="red")) == [
        "line 2: tenant 'acme': unknown key 'colour' (allowed: company, email, id, overrides, plan)"
    ]


def test_unknown_overrides_section_and_unknown_keys_inside_sections():
    text = tenant_yaml(overrides="{dns: {}, storage: {size: 1Gi}, images: {api: x}}")
    assert problems_of(text) == [
        "line 2: tenant 'acme': unknown overrides section 'dns' "
        "(allowed: images, storage, networking, placement)",
        "line 2: tenant 'acme': unknown key 'size' in overrides.storage "
        "(allowed: postgres_size, storage_class)",
        "line 2: tenant 'acme': unknown key 'api' in overrides.images (allowed: api_tag, dashboard_tag, "
        "exporter_tag, mosquitto, postgres, registry)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tenants:\n  - just-a-name\n", "line 2: a tenant must be a mapping"),
        ("tenants:\n  - [acme]\n", "line 2: a tenant must be a mapping"),
        (tenant_yaml(overrides="[storage]"), "line 2: tenant 'acme': overrides must be a mapping"),
        (
            tenant_yaml(overrides="{storage: fast}"),
            "line 2: tenant 'acme': overrides.storage must be a mapping",
        ),
    ],
)
def test_non_mappings_are_reported(text, expected):
    assert problems_of(text) == [expected]


@pytest.mark.parametrize("text", ["- id: acme\n", "just text\n"])
def test_the_file_itself_must_be_a_mapping_of_tenants(text):
    assert problems_of(text) == [
        "line 1: the file must be a mapping with 'tenants' (and optional 'defaults')"
    ]


def test_a_misspelt_top_level_key_is_named_with_its_line():
    assert problems_of("# customers\ntenant:\n  - id: acme\n") == [
        "line 2: unknown top-level key 'tenant' (allowed: defaults, tenants)"
    ]


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "networking: {cluster_cidrs: 10.0.0.0/8}",
            "overrides.networking.cluster_cidrs must be a list of strings",
        ),
        ("storage: {postgres_size: 10}", "overrides.storage.postgres_size must be a string"),
        (
            "networking: {ingress_namespace_labels: [a]}",
            "overrides.networking.ingress_namespace_labels must be a mapping",
        ),
    ],
)
def test_override_values_of_the_wrong_type_are_reported(override, expected):
    text = f"tenants:\n  - id: acme\n    email: a@b.io\n    company: A\n    overrides: {{{override}}}\n"
    (problem,) = problems_of(text)
    assert problem.startswith("line 2: tenant 'acme': " + expected)


def test_a_missing_tenants_file_is_a_clear_error(tmp_path):
    with pytest.raises(TenantsFileError, match="cannot read the file: No such file or directory"):
        load_tenants(tmp_path / "nope.yaml")


@pytest.mark.parametrize("value", ["acme", "{id: acme}"])
def test_tenants_must_be_a_list(value):
    # One problem at the line of `tenants`, not one per key (or per character) of the value.
    assert problems_of(f"# platform-managed customers\ntenants: {value}\n") == [
        "line 2: 'tenants' must be a list of tenant entries"
    ]


def test_invalid_yaml_is_reported_with_its_position():
    (problem,) = problems_of("tenants:\n  - id: acme\n   email: x\n")
    assert problem.startswith("not valid YAML")
    assert "line 3" in problem


def test_the_error_message_names_the_file_and_every_problem():
    with pytest.raises(TenantsFileError) as err:
        parse_tenants(tenant_yaml(plan="gold", email="nope"), "/srv/tenants.yaml")
    message = str(err.value)
    assert message.startswith("/srv/tenants.yaml is invalid:\n")
    assert "unknown plan 'gold'" in message and "email 'nope'" in message


# --- defaults -------------------------------------------------------------------------------------
def test_defaults_problems_carry_the_line_of_defaults():
    text = "tenants: []\ndefaults:\n  dns: {}\n  storage: {size: 1Gi}\n"
    assert problems_of(text) == [
        "line 2: defaults: unknown overrides section 'dns' (allowed: images, storage, networking, placement)",
        "line 2: defaults: unknown key 'size' in overrides.storage (allowed: postgres_size, storage_class)",
    ]


@pytest.mark.parametrize(
    ("defaults", "expected"),
    [
        ("defaults:\n  storage: fast\n", "line 5: defaults: overrides.storage must be a mapping"),
        ("defaults: [storage]\n", "line 5: defaults: overrides must be a mapping"),
    ],
)
def test_defaults_that_are_not_mappings_are_reported_not_a_crash(defaults, expected):
    # A valid tenant beside broken defaults must not make the merge crash.
    assert problems_of(tenant_yaml() + defaults) == [expected]


# --- all together -----------------------------------------------------------------------------------
BROKEN = """\
defaults:
  storage: {class: fast}
tenants:
  - id: Acme
    email: ops@acme.example
    company: ACME
  - id: globex
    email: not-an-email
    company: Globex
    plan: gold
    colour: blue
  - id: initech
    email: it@initech.example
    company: Initech
    overrides:
      networking: {domain: x.example}
  - 17
  - id: globex
    email: it@globex.example
    company: Globex again
  - id: abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdef
    email: long@name.example
    company: Long Name Ltd
"""


def test_every_problem_is_reported_at_once_with_its_line():
    long_id = "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdef"
    assert problems_of(BROKEN) == [
        "line 1: defaults: unknown key 'class' in overrides.storage (allowed: postgres_size, storage_class)",
        "line 4: tenant 'Acme': id 'Acme' is not a DNS label (lowercase letters, digits and '-', 1-63 chars)",
        "line 7: tenant 'globex': unknown key 'colour' (allowed: company, email, id, overrides, plan)",
        "line 7: tenant 'globex': email 'not-an-email' is not a valid email address",
        "line 7: tenant 'globex': unknown plan 'gold' (plans: starter, professional, enterprise)",
        "line 12: tenant 'initech': unknown key 'domain' in overrides.networking (allowed: base_domain, "
        "cluster_cidrs, cluster_issuer, ingress_class, ingress_namespace_labels)",
        "line 17: a tenant must be a mapping",
        "line 18: duplicate id 'globex' (first at line 7)",
        f"line 21: tenant '{long_id}': id '{long_id}' is longer than 54 characters "
        f"(namespace customer-{long_id})",
    ]


def test_the_documented_example_is_valid():
    example = textwrap.dedent(tenancy.schema.__doc__.split("\n\n", 2)[2])
    (tenant,) = parse_tenants(example)
    assert tenant.networking().base_domain == "eu.iotistic.cloud"
    assert tenant.storage() == Storage(storage_class="fast", postgres_size="20Gi")


@pytest.mark.parametrize("reserved", ["platform", "billing", "default", "kube-system"])
def test_ids_of_the_platform_itself_are_refused(reserved):
    problems = problems_of(f"tenants:\n  - {{id: {reserved}, email: a@b.io, company: A}}\n")
    assert problems == [
        f"line 2: tenant '{reserved}': id '{reserved}' is reserved for the platform "
        "(reserved: billing, default, kube-public, kube-system, platform)"
    ]


def test_ten_thousand_tenants_parse_with_every_problem_on_its_line():
    entries = "".join(f"  - {{id: t{i:05d}, email: ops{i}@x.io, company: C{i}}}\n" for i in range(10_000))
    text = "tenants:\n" + entries + "  - {id: t00042, email: dup@x.io, company: Dup}\n"
    assert problems_of(text) == ["line 10002: duplicate id 't00042' (first at line 44)"]
    assert len(parse_tenants(text.rsplit("  - {id: t00042", 1)[0])) == 10_000
