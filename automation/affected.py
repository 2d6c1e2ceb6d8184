"""Which stacks a change affects, from a git base (the pull request's target) to the working tree.

- a customer whose tenants.yaml entry was added, changed or removed (the parsed files compared);
- every customer stack (tenants.yaml and signup customers alike) and the `platform` stack when
  the program changed: components/, __main__.py, licensing/, tenancy/, policy/, Pulumi.yaml, or
  pinned versions (pyproject.toml, billing/requirements.txt, toolchain/, scripts/env.sh);
- nothing when only docs, tests or other services changed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tenancy.schema import Tenant, TenantsFileError, parse_tenants

TENANTS_FILE = "tenants.yaml"
# A change under any of these can change what every stack declares.
PROGRAM_PATHS = (
    "components/",
    "__main__.py",
    "program.py",
    "licensing/",
    "tenancy/",
    "policy/",
    "Pulumi.yaml",
    "pyproject.toml",
    "billing/requirements.txt",
    "toolchain/",
    "scripts/env.sh",
)
PLATFORM_STACK = "platform"


class GitError(RuntimeError):
    """The base cannot be compared (not a git checkout, unknown revision)."""


@dataclass
class Affected:
    """What to preview and why: stack name -> reason; `removed` stacks would be destroyed."""

    base: str
    changed_files: list[str] = field(default_factory=list)
    program_changed: bool = False
    tenants: dict[str, str] = field(default_factory=dict)  # tenants.yaml stacks: id -> reason
    others: dict[str, str] = field(default_factory=dict)  # signup customers and the platform stack
    removed: list[str] = field(default_factory=list)

    @property
    def stacks(self) -> list[str]:
        return sorted({*self.tenants, *self.others, *self.removed})

    def reason(self, stack: str) -> str:
        return self.tenants.get(stack) or self.others.get(stack) or "removed from tenants.yaml"


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def merge_base(repo: Path, base: str) -> str:
    """The commit the change started from (the base branch may have moved on since)."""
    try:
        git(repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    except GitError:
        raise GitError(
            f"unknown git base {base!r} in {repo} (fetch it first, e.g. git fetch origin main)"
        ) from None
    return git(repo, "merge-base", base, "HEAD").strip()


def changed_files(repo: Path, base_commit: str) -> list[str]:
    """Files that differ between the base commit and the working tree (uncommitted edits count)."""
    tracked = git(repo, "diff", "--name-only", base_commit).splitlines()
    untracked = git(repo, "ls-files", "--others", "--exclude-standard").splitlines()
    return sorted({*tracked, *untracked})


def tenants_at(repo: Path, commit: str) -> list[Tenant]:
    """tenants.yaml as it was at `commit` (none when the file did not exist or was invalid then)."""
    try:
        text = git(repo, "show", f"{commit}:{TENANTS_FILE}")
    except GitError:
        return []
    try:
        return parse_tenants(text, f"{TENANTS_FILE} at {commit[:12]}")
    except TenantsFileError:
        return []  # an invalid base: every tenant of the new file counts as added


def program_changed(files: list[str]) -> bool:
    return any(f == p or (p.endswith("/") and f.startswith(p)) for f in files for p in PROGRAM_PATHS)


def affected_stacks(repo: Path, base: str, tenants_now: list[Tenant], deployed: list[str]) -> Affected:
    """Compare `base` with the working tree; `deployed` are the stacks in the backend.

    `tenants_now` is the working tree's tenants.yaml, already validated by the caller.
    """
    commit = merge_base(repo, base)
    files = changed_files(repo, commit)
    result = Affected(base=f"{base} ({commit[:7]})", changed_files=files)
    before = {t.id: t for t in tenants_at(repo, commit)}
    now = {t.id: t for t in tenants_now}
    for tid, tenant in now.items():
        if tid not in before:
            result.tenants[tid] = "added to tenants.yaml"
        elif before[tid] != tenant:
            fields = [
                f
                for f in ("email", "company", "plan", "overrides")
                if getattr(before[tid], f) != getattr(tenant, f)
            ]
            result.tenants[tid] = f"tenants.yaml entry changed ({', '.join(fields)})"
    result.removed = sorted(tid for tid in before if tid not in now and tid in deployed)
    if program_changed(files):
        result.program_changed = True
        for name in deployed:
            if name in now:
                result.tenants.setdefault(name, "the program changed")
            elif name not in result.removed:
                result.others[name] = "the program changed"
        for tid in now:
            result.tenants.setdefault(tid, "the program changed")
    return result
