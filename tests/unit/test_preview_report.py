"""The preview command's pure parts: affected stacks from git, diff values, masking, the report.

The command itself runs on the real engine in tests/cluster/test_preview_command.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from automation.affected import GitError, affected_stacks
from automation.preview_report import MARKER, MAX_CHARS, ReportInput, failed, render
from automation.provision import StackResult
from automation.stack_preview import _ABSENT, MASK, lookup, mask, parse_path, show, volume_change
from tenancy.schema import parse_tenants

TENANTS = """\
tenants:
  - {id: acme, email: ops@acme.example, company: ACME, plan: starter}
  - {id: globex, email: it@globex.example, company: Globex, plan: professional}
"""


# --- affected stacks ------------------------------------------------------------------------------
def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "x.py").write_text("# program\n")
    (tmp_path / "README.md").write_text("# readme\n")
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "base")
    return tmp_path


def affected(repo: Path, text: str | None = None, deployed=("acme", "globex", "signup-1", "platform")):
    tenants = parse_tenants(text if text is not None else (repo / "tenants.yaml").read_text())
    return affected_stacks(repo, "main", tenants, list(deployed))


def test_nothing_changed_affects_nothing(repo):
    assert affected(repo).stacks == []


def test_docs_and_tests_only_affect_nothing(repo):
    (repo / "README.md").write_text("# readme, reworded\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_new.py").write_text("")  # untracked files count as changes too
    result = affected(repo)
    assert result.stacks == [] and "tests/test_new.py" in result.changed_files


def test_tenants_added_changed_and_removed(repo):
    text = TENANTS.replace("plan: starter", "plan: professional").replace(
        "  - {id: globex, email: it@globex.example, company: Globex, plan: professional}\n",
        "  - {id: initech, email: it@initech.example, company: Initech}\n",
    )
    result = affected(repo, text)
    assert result.tenants == {"acme": "tenants.yaml entry changed (plan)", "initech": "added to tenants.yaml"}
    assert result.removed == ["globex"] and result.others == {}
    assert result.stacks == ["acme", "globex", "initech"]


@pytest.mark.parametrize(
    "path",
    ["components/x.py", "__main__.py", "licensing/plans.py", "pyproject.toml", "toolchain/engine/go.mod"],
)
def test_a_program_or_pin_change_affects_every_stack_and_the_platform(repo, path):
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text("# changed\n")
    result = affected(repo)
    assert result.program_changed
    assert result.stacks == ["acme", "globex", "platform", "signup-1"]
    assert result.others == {"platform": "the program changed", "signup-1": "the program changed"}


def test_an_unknown_base_is_a_clear_error(repo):
    with pytest.raises(GitError, match="unknown git base 'origin/nope'.*git fetch origin main"):
        affected_stacks(repo, "origin/nope", [], [])


# --- diff values ------------------------------------------------------------------------------------
def test_property_paths():
    assert parse_path('metadata.labels["iotistic.io/plan"]') == ["metadata", "labels", "iotistic.io/plan"]
    assert parse_path("spec.template.spec.containers[0].image") == [
        "spec", "template", "spec", "containers", 0, "image",
    ]  # fmt: skip
    data = {"spec": {"containers": [{"image": "a:1"}]}}
    assert lookup(data, parse_path("spec.containers[0].image")) == "a:1"
    assert lookup(data, parse_path("spec.containers[1].image")) is _ABSENT


def test_secrets_are_masked_by_resource_name_and_value():
    secret = "kubernetes:core/v1:Secret"
    assert mask("hunter2", secret, ["data", "POSTGRES_PASSWORD"]) == MASK
    assert mask("x", "kubernetes:apps/v1:Deployment", ["spec", "env", "MQTT_PASSWORD"]) == MASK
    env = [{"name": "DATABASE_URL", "value": "postgresql://u:pw@db/x"}, {"name": "PORT", "value": "80"}]
    assert mask(env, "kubernetes:apps/v1:Deployment", ["env"]) == [
        {"name": "DATABASE_URL", "value": MASK},
        {"name": "PORT", "value": "80"},
    ]
    assert mask({"4dabf18193072939515e22adb298388d": "1b47", "value": "x"}, "t", []) == MASK
    assert show("x" * 1000).endswith("…") and len(show("x" * 1000)) == 300
    assert show(_ABSENT) == "-" and show({"b": 1, "a": [1]}) == '{"a":[1],"b":1}'


def test_volume_changes_of_claim_templates():
    def sts(size: str) -> dict:
        claim = {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": size}}}}
        return {"spec": {"volumeClaimTemplates": [claim]}}

    assert volume_change(sts("10Gi"), sts("5Gi")) == "volume data shrinks from 10Gi to 5Gi"
    assert volume_change(sts("10Gi"), sts("20Gi")) == "volume data grows from 10Gi to 20Gi"
    assert volume_change(sts("10Gi"), sts("10Gi")) == ""


# --- the report -------------------------------------------------------------------------------------
def step(op: str, name: str, diffs: int = 1, stateful: bool = False, **extra) -> dict:
    return {
        "op": op,
        "urn": f"urn:{name}",
        "type": "kubernetes:apps/v1:StatefulSet" if stateful else "kubernetes:apps/v1:Deployment",
        "name": name,
        "replace_keys": [],
        "diffs": [
            {"path": f"spec.p{i}", "kind": "update", "before": "a" * 100, "after": "b" * 100}
            for i in range(diffs)
        ],
        "stateful": stateful,
        "volume": "",
        "refused": False,
        **extra,
    }


def result(stack: str, steps=(), policies=(), ok=True, error="") -> StackResult:
    counts: dict[str, int] = {}
    for s in steps:
        counts[s["op"]] = counts.get(s["op"], 0) + 1
    return StackResult(
        stack,
        "preview",
        ok,
        1.0,
        counts,
        error=error,
        details={"steps": list(steps), "policies": list(policies)},
    )


def report(*results: StackResult) -> ReportInput:
    return ReportInput("main (abc1234)", {r.stack: "the program changed" for r in results}, list(results))


def test_nothing_affected_and_nothing_changed_both_say_no_changes():
    empty = render(ReportInput("main (abc1234)", {}, []))
    assert empty.startswith(MARKER) and "**No changes**: no stack is affected" in empty
    advisory = {"policy": "image-tags", "level": "advisory", "message": "tagged 'latest'", "urn": ""}
    same = report(result("acme", policies=[advisory]), result("globex"))
    assert "**No changes** in the 2 affected stack(s): `acme`, `globex`." in render(same)
    assert not failed(same)


def test_stateful_replacements_and_mandatory_violations_come_before_the_table():
    mandatory = {"policy": "postgres-volume-size", "level": "mandatory", "message": "5Gi < 10Gi", "urn": ""}
    inp = report(
        result(
            "acme",
            [
                step(
                    "replace",
                    "customer-acme/postgres",
                    stateful=True,
                    refused=True,
                    volume="volume data shrinks from 10Gi to 5Gi",
                )
            ],
        ),
        result("globex", [step("update", "customer-globex/api")], [mandatory]),
        result("initech", ok=False, error="error: cluster unreachable\nmore"),
    )
    text = render(inp)
    top, table = text.split("| stack |", 1)
    assert failed(inp) and "❌ **This change must not be merged as it is.**" in top
    assert (
        "- `acme`: StatefulSet `customer-acme/postgres` would be replaced — volume data shrinks from 10Gi "
        "to 5Gi; **refused: the resource is protected**"
    ) in top
    assert "- `globex`: mandatory policy `postgres-volume-size`: 5Gi < 10Gi" in top
    assert "- `initech`: preview failed: error: cluster unreachable" in top
    assert "| `globex` | the program changed | 0 | 1 | 0 | 0 | 1 mandatory, 0 advisory | ok |" in table


def test_a_huge_report_stays_under_githubs_limit_with_a_note():
    results = [
        result(f"customer-{i:03d}", [step("update", f"ns/app-{j}", diffs=60) for j in range(10)])
        for i in range(120)
    ]
    text = render(report(*results))
    assert len(text) <= MAX_CHARS
    assert all(f"| `customer-{i:03d}` |" in text for i in range(120)), "every stack stays in the summary"
    assert "were cut to stay under GitHub's comment limit" in text or "… cut: the full diff" in text
    assert text.count("<details>") == text.count("</details>")


def test_one_long_stack_is_cut_inside_its_own_section():
    long = result("acme", [step("update", f"ns/app-{j}", diffs=40) for j in range(200)])
    text = render(report(long, result("globex", [step("update", "ns/api")])))
    assert len(text) <= MAX_CHARS
    assert "… cut: the full diff of `acme` is" in text
    assert "<summary><b>globex</b>" in text
