"""The deploy fork server: job processes forked from one Python that imported the SDKs once.

The deploys themselves go through it in every deploy-path test (tests/cluster/test_deploy_path.py,
tests/billing/test_provisioning.py); here, what the processes are.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from automation import forkserver
from tests.cluster.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def ppid_and_pgid(pid: int) -> tuple[int, int]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def fresh_server(monkeypatch):
    """A server of this test alone, started with the variable below in the environment."""
    monkeypatch.setenv("IOTISTIC_FORKSERVER_TEST", "before")
    monkeypatch.delenv(forkserver.DISABLE_VARIABLE, raising=False)
    monkeypatch.setattr(forkserver, "_server", None)
    yield
    if forkserver._server is not None:
        forkserver._server.close()


def test_a_job_is_a_fork_of_the_server_with_the_sdks_loaded_before_it_reads_its_job(fresh_server):
    proc = forkserver.spawn(ROOT)
    assert proc is not None
    try:
        server = forkserver._server._proc.pid
        # The job blocks on its stdin (nothing written yet): it is the server's child, in a
        # session of its own, with grpc's native module already mapped and the caller's environment.
        wait_until(lambda: ppid_and_pgid(proc.pid) == (server, proc.pid), 10, "the job's own session")
        assert "cygrpc" in Path(f"/proc/{proc.pid}/maps").read_text()
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert b"IOTISTIC_FORKSERVER_TEST=before" in environ
        again = forkserver.spawn(ROOT)
        assert ppid_and_pgid(again.pid)[0] == server  # one server for every job
        again.stdin.close()
        again.wait(30)
    finally:
        proc.stdin.write("not a job")
        proc.stdin.close()
    assert proc.wait(30) == 1  # a job it cannot read fails, reported through the server
    assert "JSONDecodeError" in proc.stderr.read()


def test_a_caller_whose_environment_changed_starts_a_plain_process(fresh_server, monkeypatch):
    first = forkserver.spawn(ROOT)
    first.stdin.close()
    first.wait(30)
    monkeypatch.setenv("IOTISTIC_FORKSERVER_TEST", "after")
    # Module-level settings of the server were read with the old value: no fork for this one.
    assert forkserver.spawn(ROOT) is None


def test_the_timeout_path_can_wait_and_signal_a_forked_job(fresh_server):
    proc = forkserver.spawn(ROOT)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)  # still waiting for its job
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def test_a_killed_caller_takes_its_server_and_jobs_with_it():
    caller = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from pathlib import Path
                from automation import forkserver
                proc = forkserver.spawn(Path.cwd())
                print(forkserver._server._proc.pid, proc.pid, flush=True)
                time.sleep(300)
                """
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    server, job = (int(p) for p in caller.stdout.readline().split())
    assert alive(server) and alive(job)
    caller.kill()
    caller.wait()
    wait_until(lambda: not alive(server) and not alive(job), 30, "the server and its job to end")


def test_a_caller_that_exits_reaps_its_server_and_so_counts_its_jobs_cpu():
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from automation import forkserver
        proc = forkserver.spawn(Path.cwd())
        proc.stdin.write("not a job")
        proc.stdin.close()
        proc.wait(60)
        print(forkserver._server._proc.pid, flush=True)
        """
    )
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server = int(caller.stdout.readline())
    _, status, usage = os.wait4(caller.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not Path(f"/proc/{server}").exists()  # reaped by the caller, not left to init
    # The server imported the SDKs (about half a second): counted in the caller's children.
    assert usage.ru_utime + usage.ru_stime > 0.2
