"""Where customer stacks live (file backend or S3) and how one stack's workspace is opened.

Each stack gets its own work directory whose Pulumi.yaml points at the project's program
(`main:`), so concurrent deploys never write the same workspace settings. Stack config is not
private to those work dirs: every Pulumi.yaml names the same `stackConfigDir`, so reconcile, the
signup worker, the preview command and `pulumi ... -s <stack>` run from the project root all read
and write one `Pulumi.<stack>.yaml` per stack (secrets encrypted by the stack's passphrase
provider, whose salt the engine recovers from the state on a machine that never saw the file).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml
from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult

from automation.engine import PROJECT_ROOT, Engine, locate_engine
from automation.stack_secrets import SealedValue

DATA = Path(os.environ.get("IOTISTIC_DATA", PROJECT_ROOT / ".data"))
PROJECT_NAME = "iotistic"
# Every preview and up of a stack runs under the project's policy pack (policy/).
POLICY_PACK = PROJECT_ROOT / "policy"


@dataclass(frozen=True)
class StackSettings:
    """Everything needed to open any customer stack: backend, passphrase, cluster, work dirs."""

    backend_url: str
    passphrase: str
    kubeconfig: str | None
    work_root: Path
    extra_env: tuple[tuple[str, str], ...] = ()
    # Where the Pulumi.<stack>.yaml files live; default: `stacks` beside the work root.
    config_dir: Path | None = None

    @property
    def stack_config_dir(self) -> Path:
        return self.config_dir or self.work_root.parent / "stacks"

    # The platform's license public key (PEM), pinned in every instance instead of fetching the
    # billing service's key set: for clusters that cannot reach billing (the local real node).
    license_public_key: str | None = None

    @classmethod
    def from_env(cls, backend_url: str | None = None, kubeconfig: str | None = None) -> StackSettings:
        """What `source scripts/env.sh` gives the CLI: the backend, passphrase and stack config of
        the project root (file backend under the data folder unless IOTISTIC_BACKEND_URL is set)."""
        url = backend_url or os.environ.get("IOTISTIC_BACKEND_URL") or f"file://{DATA / 'pulumi-state'}"
        if url.startswith("file://"):
            Path(url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        kube = kubeconfig or os.environ.get("IOTISTIC_KUBECONFIG") or _default_kubeconfig()
        extra = tuple((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
        # IOTISTIC_STACK_CONFIG_DIR: a throw-away backend's config (tests) stays out of the project's.
        config_dir = Path(os.environ.get("IOTISTIC_STACK_CONFIG_DIR") or project_config_dir())
        key_file = os.environ.get("IOTISTIC_LICENSE_PUBLIC_KEY_FILE")
        public_key = Path(key_file).read_text() if key_file else None
        return cls(url, env_passphrase(), kube, DATA / "workspaces", extra, config_dir, public_key)

    @classmethod
    def in_folder(cls, root: Path, passphrase: str, kubeconfig: str | None) -> StackSettings:
        """A self-contained file backend (`root/state`), work dirs and stack config (`root/stacks`)."""
        (root / "state").mkdir(parents=True, exist_ok=True)
        return cls(f"file://{root / 'state'}", passphrase, kubeconfig, root / "workspaces")


def project_config_dir() -> Path:
    """The project's `stackConfigDir` (Pulumi.yaml), where `pulumi -s <stack>` from the root looks."""
    project = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())
    return PROJECT_ROOT / project.get("stackConfigDir", ".")


def env_passphrase() -> str:
    """The passphrase of stack secrets: PULUMI_CONFIG_PASSPHRASE, its _FILE, or the data folder's."""
    if os.environ.get("PULUMI_CONFIG_PASSPHRASE"):
        return os.environ["PULUMI_CONFIG_PASSPHRASE"]
    if os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        return Path(os.environ["PULUMI_CONFIG_PASSPHRASE_FILE"]).read_text().strip()
    return _stored_passphrase(DATA / "passphrase")


def _stored_passphrase(path: Path) -> str:
    """The passphrase that encrypts stack secrets; generated once, readable by the owner only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def _default_kubeconfig() -> str | None:
    local = DATA / "cluster" / "kubeconfig"
    return str(local) if local.exists() else None


def _write_project_file(work_dir: Path, config_dir: Path) -> None:
    """A Pulumi.yaml for this work dir: the project's program and venv, the shared stack config."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config_dir.mkdir(parents=True, exist_ok=True)
    venv = Path(os.environ.get("IOTISTIC_VENV", PROJECT_ROOT / ".venv"))
    text = (
        f"name: {PROJECT_NAME}\n"
        f"main: {os.path.relpath(PROJECT_ROOT, work_dir)}\n"
        # Relative: the engine joins it to this folder (an absolute path would be appended).
        f"stackConfigDir: {os.path.relpath(config_dir, work_dir)}\n"
        "runtime:\n  name: python\n  options:\n    toolchain: pip\n"
        f"    virtualenv: {venv}\n"
    )
    path = work_dir / "Pulumi.yaml"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _workspace_options(work_dir: Path, settings: StackSettings, engine: Engine) -> auto.LocalWorkspaceOptions:
    """Options of a workspace in `work_dir` that runs our engine against the configured backend."""
    _write_project_file(work_dir, settings.stack_config_dir)
    return auto.LocalWorkspaceOptions(
        work_dir=str(work_dir),
        pulumi_home=str(engine.pulumi_home),
        env_vars={**engine.env(settings.backend_url, settings.passphrase), **dict(settings.extra_env)},
        pulumi_command=engine.command(),
    )


def open_stack(
    stack_name: str,
    settings: StackSettings,
    engine: Engine | None = None,
    create: bool = True,
    encryption_salt: str | None = None,
) -> auto.Stack:
    """Create or select `stack_name` in its own work dir, on the configured backend.

    With `create=False` a stack missing from the backend raises auto.StackNotFoundError. A stack
    without a config file here is most likely new: it is created at once (a `stack select` that
    fails first costs a CLI start), with `encryption_salt` when given (see automation.stack_secrets)
    so that its secrets can be sealed in this process.
    """
    work_dir = settings.work_root / stack_name
    opts = _workspace_options(work_dir, settings, engine or locate_engine())
    if not create:
        return auto.select_stack(stack_name, work_dir=str(work_dir), opts=opts)
    config = stack_config_file(stack_name, settings)
    if not config.exists():
        if encryption_salt:

            def seed(data: dict) -> bool:
                data.setdefault("encryptionsalt", encryption_salt)
                return True

            _edit_config_file(config, seed)
        try:
            return auto.create_stack(stack_name, work_dir=str(work_dir), opts=opts)
        except auto.StackAlreadyExistsError:
            # Made elsewhere (another machine's config folder): its state keeps its own salt.
            config.unlink(missing_ok=True)
    return auto.create_or_select_stack(stack_name, work_dir=str(work_dir), opts=opts)


def stack_config_file(stack_name: str, settings: StackSettings) -> Path:
    """The stack's `Pulumi.<stack>.yaml`, shared by every work dir and the project root."""
    return settings.stack_config_dir / f"Pulumi.{stack_name}.yaml"


def _edit_config_file(path: Path, edit: Callable[[dict], bool]) -> None:
    """Apply `edit` to the parsed config file (created when missing) and, if it says so, replace
    the file atomically; everything `edit` leaves alone (the encryption salt, secure values, other
    keys) is kept."""
    data = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    if not edit(data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, width=1 << 20))
    tmp.replace(path)


def set_plain_config(
    stack_name: str,
    settings: StackSettings,
    values: Mapping[str, str],
    sealed: Mapping[str, SealedValue] | None = None,
) -> bool:
    """Plaintext config values written straight into the stack's config file.

    What `pulumi config set-all --plaintext` writes (a `config:` map of namespaced keys to
    strings), without a CLI start (~0.3 s of CPU per deploy). `sealed`: secrets sealed in this
    process (automation.stack_secrets), written in the same replace as `key: {secure: ...}` if the
    stack's salt is the one they were sealed for. Returns whether they were (False: the stack has
    another salt, and only the plaintext values were written).
    """
    written = False

    def edit(data: dict) -> bool:
        nonlocal written
        config = {**(data.get("config") or {}), **values}
        if sealed and all(v.salt == data.get("encryptionsalt") for v in sealed.values()):
            config.update({key: {"secure": v.value} for key, v in sealed.items()})
            written = True
        data["config"] = config
        return bool(values) or written

    _edit_config_file(stack_config_file(stack_name, settings), edit)
    return written


def set_secret(stack: auto.Stack, key: str, value: str) -> None:
    """`pulumi config set --secret KEY` with the value on stdin: a credential is never an argument
    (the Automation API's set_config passes values on the command line, readable in /proc)."""
    ws = stack.workspace
    assert isinstance(ws, auto.LocalWorkspace)
    engine = locate_engine()
    argv = [str(engine.pulumi_bin), "config", "set", "--secret", key, "--stack", stack.name]
    proc = subprocess.run(
        [*argv, "--non-interactive"],
        input=value,
        cwd=ws.work_dir,
        env={**os.environ, **(ws.env_vars or {})},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise auto.CommandError(CommandResult(stdout=proc.stdout, stderr=proc.stderr, code=proc.returncode))


def stack_cli(
    stack_name: str, settings: StackSettings, *args: str, engine: Engine | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `pulumi <args> --stack <name>` in the stack's work dir; for what the Automation API lacks."""
    engine = engine or locate_engine()
    work_dir = settings.work_root / stack_name
    opts = _workspace_options(work_dir, settings, engine)
    return engine.cli(
        *args, "--stack", stack_name, cwd=work_dir, env={**os.environ, **opts.env_vars}, timeout=timeout
    )


def list_stacks(settings: StackSettings, engine: Engine | None = None) -> list[str]:
    """Names of the project's stacks in the backend."""
    opts = _workspace_options(settings.work_root / "_list", settings, engine or locate_engine())
    ws = auto.LocalWorkspace(
        work_dir=opts.work_dir,
        pulumi_home=opts.pulumi_home,
        env_vars=opts.env_vars,
        pulumi_command=opts.pulumi_command,
    )
    return sorted(s.name for s in ws.list_stacks())


def s3_backend_url(bucket: str, endpoint: str | None = None, region: str = "us-east-1") -> str:
    """The Pulumi backend URL of an S3 (or S3-compatible, e.g. moto) bucket."""
    url = f"s3://{bucket}?region={region}"
    if endpoint:
        parsed = urlparse(endpoint)
        url += f"&endpoint={parsed.netloc or parsed.path}&use_path_style=true"
        if parsed.scheme == "http":
            url += "&disable_https=true"
    return url


def s3_client(backend_url: str, env: Mapping[str, str] | None = None):
    """An S3 client for an s3:// backend URL (its region, endpoint, path style), the bucket and region.

    `env` (a StackSettings' extra_env) may carry the AWS credentials the engine gets; without
    them boto3's usual chain (environment, ~/.aws) applies.
    """
    import boto3

    parsed = urlparse(backend_url)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    endpoint = query.get("endpoint")
    if endpoint:
        endpoint = ("http://" if query.get("disable_https") == "true" else "https://") + endpoint
    env = env or {}
    # A session of its own: boto3's default one keeps whatever credentials it found first.
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
    )
    region = query.get("region", "us-east-1")
    return session.client("s3", region_name=region, endpoint_url=endpoint), parsed.netloc, region


def ensure_s3_backend(backend_url: str, env: Mapping[str, str] | None = None) -> None:
    """Make sure the bucket behind an s3:// backend exists with versioning on (state history).

    `env` (a StackSettings' extra_env) may carry the AWS credentials the engine gets; without
    them boto3's usual chain (environment, ~/.aws) applies.
    """
    from botocore.exceptions import ClientError

    s3, bucket, region = s3_client(backend_url, env)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise
        location = {"LocationConstraint": region}
        s3.create_bucket(
            Bucket=bucket, **({} if region == "us-east-1" else {"CreateBucketConfiguration": location})
        )
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
