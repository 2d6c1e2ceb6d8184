"""The real `pulumi` CLI, built by the project, runs a stack end to end on a file backend."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.engine


def test_preview_up_noop_up_destroy(password_project):
    p = password_project
    p.run("stack", "init", "dev")
    p.run("config", "set", "length", "40")

    preview = json.loads(p.run("preview", "--json").stdout)
    assert preview["changeSummary"] == {"create": 2}  # the stack and the password

    up = p.run("up", "--yes", "--skip-preview")
    assert "2 created" in up.stdout

    # A second `up` of an unchanged program must change nothing (and says so via its exit code).
    again = p.run("up", "--yes", "--skip-preview", "--expect-no-changes")
    assert "2 unchanged" in again.stdout

    password = p.run("stack", "output", "password", "--show-secrets").stdout.strip()
    assert len(password) == 40 and password.isalnum()
    assert p.run("stack", "output", "password").stdout.strip() == "[secret]"

    exported = p.run("stack", "export").stdout
    assert password not in exported, "plaintext password leaked into the stack state"
    assert '"4dabf18193072939515e22adb298388d"' in exported  # Pulumi's secret signature: stored encrypted
    stored = "".join(f.read_text() for f in (p.dir / ".state").rglob("*.json"))
    assert password not in stored

    destroy = p.run("destroy", "--yes", "--skip-preview")
    assert "2 deleted" in destroy.stdout
    assert not p.export()["deployment"].get("resources")


def test_changed_config_is_an_update_not_a_surprise(password_project):
    p = password_project
    p.run("stack", "init", "dev")
    p.run("up", "--yes", "--skip-preview")
    p.run("config", "set", "length", "30")
    preview = json.loads(p.run("preview", "--json").stdout)
    # `length` forces a new password: Pulumi replaces it rather than editing in place.
    assert preview["changeSummary"].get("replace") == 1
    failed = p.run("up", "--yes", "--skip-preview", "--expect-no-changes", check=False)
    assert failed.returncode != 0
