"""Entry point of the policy pack: the engine runs `python policy <engine address>` in the venv."""

import sys
from pathlib import Path

# The pack runs from a stack's work dir: make the project's packages (policy, components) importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack  # noqa: E402

from policy.pack import PACK_NAME, POLICIES  # noqa: E402

PolicyPack(name=PACK_NAME, policies=POLICIES)
