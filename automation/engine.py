"""Where the locally built Pulumi engine lives, and the environment every stack operation gets.

`scripts/env.sh` is the shell twin of this module; both derive everything from IOTISTIC_CACHE.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pulumi import automation as auto
from pulumi.automation._cmd import _MINIMUM_VERSION, _parse_and_validate_pulumi_version

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class EngineNotBuilt(RuntimeError):
    """The Pulumi CLI or its plugins are missing: run scripts/setup first."""


@dataclass(frozen=True)
class Engine:
    """The Pulumi CLI and home that every stack operation of this project uses."""

    cache: Path
    pulumi_home: Path
    pulumi_bin: Path

    def env(self, backend_url: str, passphrase: str | None = None) -> dict[str, str]:
        """Environment for one stack operation: no downloads, no update checks, our plugins only."""
        env = {
            "PULUMI_HOME": str(self.pulumi_home),
            "PULUMI_BACKEND_URL": backend_url,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
            # A stack config file written on another machine (or not yet) gets the stack's secrets
            # provider from the state instead of a new, different one.
            "PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER": "true",
            # Our language host sits next to our CLI; the venv's bin gives it the right python.
            "PATH": os.pathsep.join([str(self.pulumi_bin.parent), os.environ.get("PATH", "")]),
        }
        if passphrase is not None:
            env["PULUMI_CONFIG_PASSPHRASE"] = passphrase
        return env

    def cli(
        self, *args: str, cwd: Path, env: dict[str, str], timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run our `pulumi` CLI non-interactively in `cwd`; the caller decides what a failure means."""
        return subprocess.run(
            [str(self.pulumi_bin), *args, "--non-interactive"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def command(self) -> auto.PulumiCommand:
        """The Automation API's handle on our CLI (its version is checked against the SDK once per
        process: each handle runs `pulumi version`, 0.2 s of CPU)."""
        return _command(str(self.pulumi_bin.parent.parent))


class _KnownVersionCommand(auto.PulumiCommand):
    """A PulumiCommand for a CLI whose version is already known: PulumiCommand() itself runs
    `pulumi version` (a Go start, ~0.2 s of CPU) in every deploy process."""

    def __init__(self, root: str, version: str) -> None:  # the parent's __init__ is skipped on purpose
        self.command = os.path.join(root, "bin", "pulumi")
        # The same check PulumiCommand() makes against the SDK's minimum version.
        self.version = _parse_and_validate_pulumi_version(_MINIMUM_VERSION, version.removeprefix("v"), False)


@functools.cache
def _command(root: str) -> auto.PulumiCommand:
    """One handle per process; the CLI's version read once per engine build and kept beside it."""
    binary = Path(root) / "bin" / "pulumi"
    stat = binary.stat()
    stamp = binary.with_name(".pulumi.version")
    key = f"{stat.st_size}:{stat.st_mtime_ns}"
    try:
        cached_key, version = stamp.read_text().split()
        if cached_key == key:
            return _KnownVersionCommand(root, version)
    except (OSError, ValueError):
        pass
    command = auto.PulumiCommand(root=root)
    with contextlib.suppress(OSError):  # a read-only cache only costs the next process a `pulumi version`
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}")
        tmp.write_text(f"{key} {command.version}\n")
        tmp.replace(stamp)
    return command


def locate_engine() -> Engine:
    """Find the engine built by toolchain/build-engine.sh, or a user-installed pulumi of the right version."""
    cache = Path(os.environ.get("IOTISTIC_CACHE", PROJECT_ROOT / ".cache"))
    pulumi_bin = cache / "bin" / "pulumi"
    if not pulumi_bin.exists():
        found = shutil.which("pulumi")
        if not found:
            raise EngineNotBuilt(
                f"no pulumi CLI at {pulumi_bin} or on PATH: run scripts/setup to build the engine"
            )
        pulumi_bin = Path(found)
        if pulumi_bin.parent.name != "bin":
            raise EngineNotBuilt(f"pulumi at {pulumi_bin} is not inside a bin/ folder")
    return Engine(cache=cache, pulumi_home=engine_home(cache / "pulumi-home"), pulumi_bin=pulumi_bin)


def engine_home(shared: Path) -> Path:
    """PULUMI_HOME of this process: the cache's, or IOTISTIC_PULUMI_HOME, an engine home of its own
    (one per worker process or machine, so workers share nothing but the backend and the queue).
    An own home gets the plugins set-up registered in the shared one, linked, not copied."""
    own = os.environ.get("IOTISTIC_PULUMI_HOME")
    return without_automatic_logs(_linked_home(shared, Path(own)) if own else shared)


AUTOMATIC_LOGS_OFF = (
    "Not a folder on purpose: the pulumi CLI (3.259) writes a debug log of every run into\n"
    "PULUMI_HOME/logs, with no setting to turn it off, and skips it when it cannot make this folder.\n"
    "That log cost a quarter of a deploy's engine CPU and ~270 KB of disk per CLI run.\n"
    "For a run's details, pass -v=<level> --logtostderr to the CLI.\n"
)


@functools.cache
def without_automatic_logs(home: Path) -> Path:
    """`home` with a file where the CLI would make its `logs` folder, so that it writes none.

    Every CLI run (each deploy runs three) wrote a gzip or encrypted debug-level log there, about a
    quarter of `pulumi up`'s CPU (engine profile: slog handler, property encoding, flate), and kept
    up to 500 MB of them; the CLI goes on without one when the folder cannot be made. A folder
    left by an earlier run is removed (the logs are the CLI's, not the project's).
    """
    logs = home / "logs"
    if logs.is_dir() and not logs.is_symlink():
        shutil.rmtree(logs, ignore_errors=True)
    if not logs.is_file():
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".logs.{os.getpid()}.tmp"
        tmp.write_text(AUTOMATIC_LOGS_OFF)
        try:
            tmp.replace(logs)
        except OSError:  # a CLI still writing into the old folder: it only costs CPU, next time
            tmp.unlink(missing_ok=True)
    return home


@functools.cache
def _linked_home(shared: Path, home: Path) -> Path:
    """`home` with the shared home's plugins linked in; once per process (every stack operation
    locates the engine)."""
    plugins = shared / "plugins"
    for plugin in plugins.iterdir() if plugins.is_dir() else ():
        if not plugin.is_dir():
            continue
        # Real folders with linked files: the engine does not follow a symlinked plugin folder.
        target = home / "plugins" / plugin.name
        target.mkdir(parents=True, exist_ok=True)
        for binary in plugin.iterdir():
            link = target / binary.name
            if link.exists():
                continue
            try:
                os.link(binary, link)
            except FileExistsError:
                pass  # another process of this home linked it first
            except OSError:
                with contextlib.suppress(FileExistsError):
                    link.symlink_to(binary)  # another filesystem
    return home
