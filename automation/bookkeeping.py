"""What the backend says was last deployed, read straight from the stacks' checkpoints.

Deciding that 1,000 tenants are unchanged must not cost 1,000 engine runs: the outputs the program
exports for bookkeeping (`source`, `tenantHash`, `instanceUrl`, `licenseExpiresAt`) are plain
values in each stack's checkpoint file, so they are read here directly, in parallel, from the file
backend or S3 (the layout of Pulumi's DIY backends: `.pulumi/stacks/<project>/<stack>.json`,
optionally gzipped). Secrets stay encrypted: nothing here needs them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from automation.workspace import PROJECT_NAME, StackSettings, s3_client

STACK_TYPE = "pulumi:pulumi:Stack"
SUFFIXES = (".json", ".json.gz")


@dataclass(frozen=True)
class DeployedStack:
    """What the backend remembers of a stack's last deployment (nothing secret)."""

    name: str
    source: str | None
    tenant_hash: str | None
    instance_url: str = ""
    license_expires_at: datetime | None = None
    # The last update was interrupted (killed, or the machine went down) with operations in flight.
    incomplete: bool = False


def _latest(raw: bytes) -> dict:
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return (json.loads(raw).get("checkpoint") or {}).get("latest") or {}


def _stack_outputs(latest: dict) -> dict[str, str]:
    for resource in latest.get("resources") or []:
        if resource.get("type") == STACK_TYPE:
            return {k: v for k, v in (resource.get("outputs") or {}).items() if isinstance(v, str)}
    return {}


def _plain_outputs(raw: bytes) -> dict[str, str]:
    """The string outputs of a checkpoint's stack resource; secrets (objects) are left out."""
    return _stack_outputs(_latest(raw))


def _from_checkpoint(name: str, raw: bytes) -> DeployedStack:
    latest = _latest(raw)
    outputs = _stack_outputs(latest)
    expires = outputs.get("licenseExpiresAt")
    try:
        expires_at = datetime.fromisoformat(expires) if expires else None
    except ValueError:
        expires_at = None
    return DeployedStack(
        name,
        outputs.get("source"),
        outputs.get("tenantHash"),
        outputs.get("instanceUrl", ""),
        expires_at,
        # The engine lists the creates, updates and deletes it had started when it was stopped.
        incomplete=bool(latest.get("pending_operations")),
    )


def _stack_name(key: str) -> str | None:
    base = key.rsplit("/", 1)[-1]
    for suffix in SUFFIXES:
        if base.endswith(suffix):
            return base.removesuffix(suffix)
    return None


def _file_checkpoints(root: Path, project: str, stack: str = "") -> Iterator[tuple[str, callable]]:
    folder = root / ".pulumi" / "stacks" / project
    if not folder.is_dir():
        return
    # One stack: its own file names, not a listing of every stack's.
    paths = [folder / f"{stack}{suffix}" for suffix in SUFFIXES] if stack else folder.iterdir()
    for path in paths:
        name = _stack_name(path.name)
        if name is not None and path.is_file():
            yield name, path.read_bytes


def _s3_checkpoints(
    url: str, env: dict[str, str], project: str, stack: str = ""
) -> Iterator[tuple[str, callable]]:
    s3, bucket, _ = s3_client(url, env)
    path = urlparse(url).path.strip("/")
    prefix = f"{path + '/' if path else ''}.pulumi/stacks/{project}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + stack):
        for obj in page.get("Contents", []):
            name = _stack_name(obj["Key"])
            if name is not None and "/" not in obj["Key"][len(prefix) :]:
                key = obj["Key"]
                yield name, lambda key=key: s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _checkpoints(settings: StackSettings, project: str, stack: str = "") -> Iterator[tuple[str, callable]]:
    """(stack name, read its checkpoint) for every stack of `project`, or for `stack` alone."""
    url = settings.backend_url
    if url.startswith("file://"):
        return _file_checkpoints(Path(url.removeprefix("file://")), project, stack)
    if url.startswith("s3://"):
        return _s3_checkpoints(url, dict(settings.extra_env), project, stack)
    raise ValueError(f"cannot read checkpoints of backend {url.split('?')[0]!r} (file:// or s3:// only)")


def stack_outputs(settings: StackSettings, stack: str, project: str = PROJECT_NAME) -> dict[str, str]:
    """One stack's plain outputs from its checkpoint ({} when it has none): what a finished `up`
    exported, without the two `pulumi stack output` runs the Automation API would make."""
    for name, read in _checkpoints(settings, project, stack):
        if name == stack:  # S3 lists by prefix: `acme` also finds `acme-eu`
            return _plain_outputs(read())
    return {}


def deployed_stacks(
    settings: StackSettings, project: str = PROJECT_NAME, workers: int = 16
) -> dict[str, DeployedStack]:
    """Every stack of the project in the backend with its bookkeeping outputs."""
    sources = list(_checkpoints(settings, project))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = pool.map(lambda src: _from_checkpoint(src[0], src[1]()), sources)
        return {stack.name: stack for stack in found}
