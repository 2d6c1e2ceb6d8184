"""A fork server for deploy processes: the SDKs are imported once, each job is a fork.

Every deploy, preview and destroy runs in a process of its own (automation.deploy), and each of
those processes used to start Python and import pulumi, its Automation API, grpc and
pulumi-kubernetes again: ~0.5 s of CPU per job, several minutes over a thousand customers. The
first job of a caller process starts `python -m automation.forkserver`, which imports them once
and then forks one child per job. A child is what `python -m automation.deploy` was:

- its stdin, stdout and stderr are pipes of the caller (sent over a Unix socket), so run_job
  reads and writes them as before;
- it leads a session of its own (signals reach its whole engine process group, as with
  `start_new_session`), and it gets SIGTERM when the server dies; the server gets SIGTERM when
  the caller dies (both PR_SET_PDEATHSIG), so a killed worker still cancels its deploys;
- it runs with the caller's environment of the moment, sent with each job.

The server is the parent of the jobs: it reaps them and sends each exit status back. If it cannot
be started, or the caller's environment has changed since it started (module-level settings were
read then), run_job starts `python -m automation.deploy` as before. IOTISTIC_DEPLOY_FORKSERVER=0
turns it off.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path

# What a job imports: the deploy path, the previews, and the program (components, pulumi_kubernetes).
PRELOAD = ("automation.deploy", "automation.provision", "automation.stack_preview", "program")
DISABLE_VARIABLE = "IOTISTIC_DEPLOY_FORKSERVER"
_PR_SET_PDEATHSIG = 1
_MAX_MESSAGE = 1 << 20


def die_with_parent() -> None:
    """In a child before it runs anything: SIGTERM when the thread that started it ends
    (PR_SET_PDEATHSIG). The deploy path's processes and the fork server's jobs all use it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# --- server side ---------------------------------------------------------------------------------
def _run_child(request: dict, fds: list[int]) -> int:
    """In the forked child: become what `python -m automation.deploy` is, and run the job."""
    os.setsid()
    die_with_parent()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(request["env"])
    from automation import deploy

    return deploy.main()


def serve(sock: socket.socket) -> None:
    """Fork a child per request until the caller closes its end of `sock`."""
    for module in PRELOAD:
        __import__(module)
    # The imported modules live as long as every child: out of the garbage collector's sight, its
    # collections in the children do not walk them (nor touch, and so copy, their pages).
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop up
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    sock.send(b'{"ready": true}')
    children: set[int] = set()
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                message, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 3)
                if not message:  # the caller is gone: so are its jobs
                    for pid in children:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGTERM)
                    return
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        sock.close()
                        os.close(wake_r)
                        os.close(wake_w)
                        signal.set_wakeup_fd(-1)
                        code = _run_child(json.loads(message), fds)
                    except SystemExit as e:
                        code = e.code if isinstance(e.code, int) else 1
                    except BaseException:
                        traceback.print_exc()
                    finally:
                        with contextlib.suppress(Exception):
                            sys.stdout.flush()
                            sys.stderr.flush()
                        os._exit(code)
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                sock.send(json.dumps({"pid": pid}).encode())
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                while children:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    children.discard(pid)
                    exit_code = os.waitstatus_to_exitcode(status)
                    sock.send(json.dumps({"exit": pid, "code": exit_code}).encode())


def main() -> int:
    fd = int(sys.argv[1])
    sock = socket.socket(fileno=fd)
    serve(sock)
    return 0


# --- caller side ---------------------------------------------------------------------------------
class ForkedProcess:
    """A job's process, forked by the server: the part of subprocess.Popen that run_job uses."""

    def __init__(self, server: ForkServer, pid: int, stdin, stdout, stderr) -> None:
        self._server = server
        self.pid = pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        code = self._server.exit_code(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"deploy process {self.pid}", timeout or 0)
        self.returncode = code
        return code


class ForkServer:
    """The caller's handle on its fork server (one per caller process, see `spawn`)."""

    def __init__(self, root: Path) -> None:
        self.env = dict(os.environ)
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self._exited = threading.Condition()
        self._replies: list[dict] = []
        self._alive = True
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        started = threading.Event()
        failure: list[BaseException] = []

        def own() -> None:
            # PR_SET_PDEATHSIG fires when the thread that started a process ends: this one never
            # does, so the server dies with the caller process, not with a worker thread.
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "automation.forkserver", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=root,
                    # Out of the caller's terminal process group: a Ctrl-C reaches the caller,
                    # which decides; the server only ends with it.
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            except BaseException as e:  # reported to the caller below
                failure.append(e)
                started.set()
                return
            started.set()
            self._proc.wait()

        threading.Thread(target=own, name="forkserver-owner", daemon=True).start()
        started.wait()
        theirs.close()
        if failure:
            raise failure[0]
        ready = self._sock.recv(_MAX_MESSAGE)  # empty: it died while importing
        if not ready:
            raise RuntimeError("the deploy fork server exited while importing the SDKs")
        threading.Thread(target=self._read, name="forkserver-reader", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self._sock.recv(_MAX_MESSAGE)
            except OSError:
                message = b""
            with self._exited:
                if not message:
                    self._alive = False
                    self._exited.notify_all()
                    return
                data = json.loads(message)
                if "exit" in data:
                    self._exits[data["exit"]] = data["code"]
                else:
                    self._replies.append(data)
                self._exited.notify_all()

    @property
    def alive(self) -> bool:
        return self._alive

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The job's exit code once it has exited (None on timeout); -9 if the server died first."""
        with self._exited:
            self._exited.wait_for(lambda: pid in self._exits or not self._alive, timeout)
            if pid in self._exits:
                return self._exits.pop(pid)
            return None if self._alive else -signal.SIGKILL

    def start(self) -> ForkedProcess:
        """Fork a job process whose stdin, stdout and stderr are new pipes of this process."""
        pipes = [os.pipe() for _ in range(3)]
        child_ends = [pipes[0][0], pipes[1][1], pipes[2][1]]
        try:
            with self._lock:  # one request at a time: replies come back in order
                request = json.dumps({"env": dict(os.environ)}).encode()
                socket.send_fds(self._sock, [request], child_ends)
                with self._exited:
                    self._exited.wait_for(lambda: self._replies or not self._alive)
                    if not self._replies:
                        raise RuntimeError("the deploy fork server is gone")
                    pid = self._replies.pop(0)["pid"]
        finally:
            for fd in child_ends:
                os.close(fd)
        return ForkedProcess(
            self,
            pid,
            open(pipes[0][1], "w", encoding="utf-8"),
            open(pipes[1][0], encoding="utf-8"),
            open(pipes[2][0], encoding="utf-8"),
        )

    def close(self, timeout: float = 30.0) -> None:
        """End the server (it ends any job still running) and reap it, so that its CPU time and
        its jobs' count in this process's children (wait4, getrusage) like plain processes'."""
        # shutdown(), not only close(): the reader thread's pending recv() keeps a closed socket
        # open, and the server would never see the end of it.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(AttributeError, subprocess.TimeoutExpired):
            self._proc.wait(timeout)


_server: ForkServer | None = None
_server_lock = threading.Lock()


@atexit.register
def _close_at_exit() -> None:
    if _server is not None:
        _server.close()


def spawn(root: Path) -> ForkedProcess | None:
    """A job process from this process's fork server (started on first use), or None when a plain
    `python -m automation.deploy` must be started instead."""
    global _server
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return None
    with _server_lock:
        if _server is None or not _server.alive:
            try:
                _server = ForkServer(root)
            except (OSError, RuntimeError):
                _server = None
                return None
        server = _server
    if server.env != dict(os.environ):
        return None
    try:
        return server.start()
    except (OSError, RuntimeError):
        return None


if __name__ == "__main__":
    sys.exit(main())
