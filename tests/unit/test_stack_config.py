"""Plain stack config written straight into Pulumi.<stack>.yaml: the engine tests read it back for real
(tests/cluster/test_customer_stacks.py, test_cli_from_root.py); here, what the file keeps."""

from __future__ import annotations

from pathlib import Path

import yaml

from automation.workspace import StackSettings, set_plain_config, stack_config_file


def test_plain_values_are_added_and_the_salt_and_secrets_are_kept(tmp_path: Path):
    settings = StackSettings.in_folder(tmp_path, "unused", None)
    path = stack_config_file("acme", settings)
    path.parent.mkdir(parents=True)
    path.write_text(
        "encryptionsalt: v1:6xTNikkH7ps=:v1:GnVQ:b+kI\n"
        "config:\n  iotistic:plan: starter\n  iotistic:licenseKey:\n    secure: v1:l0Jm:yq9p\n"
    )
    set_plain_config("acme", settings, {"iotistic:plan": "professional", "iotistic:overrides": '{"a": 1}'})
    data = yaml.safe_load(path.read_text())
    assert data["encryptionsalt"] == "v1:6xTNikkH7ps=:v1:GnVQ:b+kI"
    assert data["config"] == {
        "iotistic:plan": "professional",
        "iotistic:licenseKey": {"secure": "v1:l0Jm:yq9p"},
        "iotistic:overrides": '{"a": 1}',
    }
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_a_stack_without_a_config_file_gets_one(tmp_path: Path):
    settings = StackSettings.in_folder(tmp_path, "unused", None)
    set_plain_config("new", settings, {"iotistic:suspended": "false"})
    assert yaml.safe_load(stack_config_file("new", settings).read_text()) == {
        "config": {"iotistic:suspended": "false"}
    }
