"""One stack operation in its own process, with a timeout: the deploy path every caller shares.

The signup worker (billing's job queue), the reconcile command and the preview command (action
"preview") all call `run_job(job)`. It
starts `python -m automation.deploy` in a new process group, hands it the job on stdin (secrets
never on a command line), streams the engine's output for progress, and reads one JSON result
line. The child runs `up` or `destroy` through the Automation API and:

- exits when its parent dies (PR_SET_PDEATHSIG): a killed worker cancels its deploy gracefully,
  so the stack is not left locked and the retried job finds it consistent;
- is interrupted on timeout (SIGINT to its group: the engine cancels gracefully), then killed;
- finds a lock left by a deploy that died (same host and its pid gone, or older than
  `STALE_LOCK_SECONDS`), removes it (`pulumi cancel`) and tries once more;
- says whether a failure is transient (another update holds the stack, the API server is
  unreachable), so job queues retry those with backoff and report the rest at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from automation import forkserver, stack_secrets
from automation.provision import SOURCE_SIGNUP, StackResult, destroy_customer, up_customer
from automation.stack_secrets import SealedValue
from automation.workspace import StackSettings, open_stack
from tenancy.schema import Tenant

STALE_LOCK_SECONDS = 900.0  # a deploy is killed after its timeout (5 min): older locks are orphans
TAIL_LINES = 12
# Engine failures worth a retry: someone else holds the stack, or the cluster did not answer.
TRANSIENT = re.compile(
    r"currently locked|ConcurrentUpdateError|conflict: Another update is currently in progress|"
    r"connection refused|unable to connect|i/o timeout|TLS handshake timeout|"
    r"the server is currently unable to handle the request|etcdserver: request timed out|"
    r"http2: client connection lost|context deadline exceeded|timed out after|"
    r"the object has been modified",
    re.IGNORECASE,
)
# A write that lost a race inside the API server: the ResourceQuota admission plugin updating the
# namespace's quota usage (or any optimistic-concurrency write) found the object changed under it.
# The API server gives up after a few tries of its own under load; the next attempt succeeds.
CONFLICT = re.compile(r"the object has been modified; please apply your changes to the latest version")
CONFLICT_ATTEMPTS = 3
CONFLICT_BACKOFF_SECONDS = 2.0
_LOCK = re.compile(r"created by (?P<user>[^@\s]+)@(?P<host>\S+) \(pid (?P<pid>\d+)\) at (?P<at>\S+)")


@dataclass
class DeployJob:
    """What to do to which stack; everything a fresh process on any machine needs."""

    action: str  # "up" | "destroy" | "preview" | "preview-destroy"
    stack: str
    settings: StackSettings
    tenant: Tenant | None = None
    license_key: str | None = field(default=None, repr=False)
    source: str = SOURCE_SIGNUP
    suspended: bool = False
    remove_stack: bool = True
    # Previews: the shared stack config to start from (settings has a private config dir), and
    # whether the policy pack runs (always, but for the benchmark's baseline).
    shared_config_dir: str | None = None
    with_policy: bool = True
    # The license sealed by the caller (run_job), which derives the stack key once per process.
    sealed_license: SealedValue | None = field(default=None, repr=False)

    def to_json(self) -> str:
        data = asdict(self)
        data["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in data["settings"].items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> DeployJob:
        data = json.loads(text)
        s = data["settings"]
        data["settings"] = StackSettings(
            s["backend_url"],
            s["passphrase"],
            s["kubeconfig"],
            Path(s["work_root"]),
            tuple(tuple(kv) for kv in s["extra_env"]),
            Path(s["config_dir"]) if s.get("config_dir") else None,
            s.get("license_public_key"),
        )
        data["tenant"] = Tenant(**data["tenant"]) if data.get("tenant") else None
        data["sealed_license"] = SealedValue(**data["sealed_license"]) if data.get("sealed_license") else None
        return cls(**data)


@dataclass
class DeployResult(StackResult):
    """A StackResult that also says whether trying again later may help."""

    transient: bool = False


# --- parent side ---------------------------------------------------------------------------------


def sealed(job: DeployJob) -> DeployJob:
    """`job` with its license sealed here (automation.stack_secrets): this process derives the
    key of its config folder's salt once, where each child would pay a CLI run and a derivation.
    A folder salt the passphrase does not open leaves the job as it is (the child's CLI stores it)."""
    if job.action != "up" or not job.license_key or job.sealed_license is not None:
        return job
    try:
        sealer = stack_secrets.folder_sealer(job.settings.passphrase, job.settings.stack_config_dir)
    except (stack_secrets.WrongPassphrase, OSError):
        return job
    return replace(job, sealed_license=SealedValue(sealer.state, sealer.seal(job.license_key)))


def run_job(
    job: DeployJob, timeout: float = 300.0, on_line: Callable[[str], None] | None = None
) -> DeployResult:
    """Run `job` in its own process; never raises for an engine failure (see the result)."""
    started = time.monotonic()
    job = sealed(job)
    root = Path(__file__).resolve().parent.parent
    # A fork of a server that has imported the SDKs already (automation.forkserver), else a new Python.
    proc = forkserver.spawn(root) or subprocess.Popen(
        [sys.executable, "-m", "automation.deploy"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=forkserver.die_with_parent,
        cwd=root,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=TAIL_LINES * 4)
    out: list[str] = []

    def pump_stderr() -> None:
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)

    readers = [
        threading.Thread(target=pump_stderr, daemon=True),
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    proc.stdin.write(job.to_json())
    proc.stdin.close()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop_group(proc)
    for reader in readers:
        reader.join(timeout=10)
    seconds = time.monotonic() - started
    results = [ln for ln in "".join(out).splitlines() if ln.startswith("{")]
    last = "\n".join(_readable(tail))
    if timed_out or not results:
        why = (
            f"timed out after {timeout:.0f} s"
            if timed_out
            else f"the deploy process exited with status {proc.returncode} and no result"
        )
        # A timeout or a killed child may well succeed next time; a crash with a status may not.
        transient = timed_out or (proc.returncode is not None and proc.returncode < 0)
        return DeployResult(
            job.stack, job.action, False, seconds, error=f"{why}\n{last}".strip(), transient=transient
        )
    result = DeployResult(**json.loads(results[-1]))
    result.seconds = seconds
    return result


def _stop_group(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """Interrupt the whole group (the engine cancels and saves its state), then kill what is left."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _readable(lines) -> list[str]:
    """The engine's last lines, without blank lines or Python tracebacks."""
    keep = [ln for ln in lines if ln.strip() and not ln.startswith(("Traceback", "  File ", "    "))]
    return keep[-TAIL_LINES:]


# --- child side ----------------------------------------------------------------------------------
def stale_lock(error: str, now: datetime, host: str | None = None) -> bool:
    """True when every lock named in `error` belongs to a deploy that is gone."""
    locks = list(_LOCK.finditer(error))
    if not locks:
        return False
    host = host or socket.gethostname()
    for lock in locks:
        try:
            at = datetime.fromisoformat(lock["at"].replace("Z", "+00:00"))
        except ValueError:
            return False
        if (now - at).total_seconds() > STALE_LOCK_SECONDS:
            continue
        if lock["host"] == host and not _pid_alive(int(lock["pid"])):
            continue
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _attempt(job: DeployJob, log: Callable[[str], None]) -> StackResult:
    if job.action == "up":
        assert job.tenant is not None and job.license_key is not None
        # This process drives one stack: the program runs inline, imported once for preview and up.
        return up_customer(
            job.tenant,
            job.license_key,
            job.settings,
            log,
            source=job.source,
            suspended=job.suspended,
            inline=True,
            sealed_license=job.sealed_license,
        )
    if job.action == "destroy":
        return destroy_customer(job.stack, job.settings, log, remove=job.remove_stack)
    if job.action in ("preview", "preview-destroy"):
        from automation.stack_preview import preview_stack

        shared = Path(job.shared_config_dir) if job.shared_config_dir else None
        return preview_stack(
            job.stack,
            job.settings,
            shared,
            job.tenant,
            job.license_key,
            job.source,
            destroy=job.action == "preview-destroy",
            with_policy=job.with_policy,
            log=log,
        )
    raise ValueError(f"unknown action {job.action!r}")


def execute(
    job: DeployJob, log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep
) -> DeployResult:
    """Run the job here (the child process), clearing an orphaned lock once and trying again
    after a write conflict in the API server (up to CONFLICT_ATTEMPTS in all)."""
    result = _attempt(job, log)
    if not result.ok and stale_lock(result.error, datetime.now(UTC)):
        log(f"{job.stack}: removing a lock left by a deploy that is gone, then trying again")
        open_stack(job.stack, job.settings).cancel()
        result = _attempt(job, log)
    for attempt in range(2, CONFLICT_ATTEMPTS + 1):
        if result.ok or job.action not in ("up", "destroy") or not CONFLICT.search(result.error):
            break
        # An `up` or `destroy` continues from what the failed one recorded: only the refused
        # writes are made again.
        log(f"{job.stack}: a write lost a conflict in the API server; try {attempt} of {CONFLICT_ATTEMPTS}")
        sleep(CONFLICT_BACKOFF_SECONDS * (attempt - 1))
        seconds = result.seconds
        result = _attempt(job, log)
        result.seconds += seconds
    return DeployResult(**asdict(result), transient=not result.ok and bool(TRANSIENT.search(result.error)))


def main() -> int:
    job = DeployJob.from_json(sys.stdin.read())
    # SIGINT (timeout) and SIGTERM (parent died) reach the engine as SIGINT: it cancels the update
    # gracefully and releases the stack. This process waits for it and reports.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(os.getpgid(0), signal.SIGINT))

    def log(line: str) -> None:
        print(line.rstrip("\n"), file=sys.stderr, flush=True)

    result = execute(job, log)
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
