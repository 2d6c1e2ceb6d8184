"""The same lifecycle through the Pulumi Automation API from Python, on the same built engine."""

from __future__ import annotations

import pytest
from pulumi import automation as auto

pytestmark = pytest.mark.engine


def _stack(project) -> auto.Stack:
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(project.dir),
        pulumi_home=project.env["PULUMI_HOME"],
        env_vars={k: v for k, v in project.env.items() if k.startswith("PULUMI_") or k == "PATH"},
        pulumi_command=project.engine.command(),
    )
    return auto.create_stack("dev", work_dir=str(project.dir), opts=opts)


def test_automation_api_lifecycle(password_project):
    stack = _stack(password_project)
    stack.set_config("length", auto.ConfigValue("36"))

    preview = stack.preview()
    assert preview.change_summary == {auto.OpType.CREATE: 2}

    up = stack.up()
    assert up.summary.resource_changes == {"create": 2}
    secret = up.outputs["password"]
    assert secret.secret is True and len(secret.value) == 36

    again = stack.up()
    assert again.summary.resource_changes == {"same": 2}

    # The Automation API's export decrypts secrets for the caller; what is stored must not.
    stored = "".join(f.read_text() for f in (password_project.dir / ".state").rglob("*.json"))
    assert '"ciphertext"' in stored
    assert secret.value not in stored, "plaintext password leaked into the stored state"

    destroyed = stack.destroy()
    assert destroyed.summary.resource_changes == {"delete": 2}
    assert not stack.export_stack().deployment.get("resources")
