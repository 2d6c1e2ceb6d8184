"""Shared fixtures: the real Pulumi engine and throw-away Pulumi projects on a file backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from automation.engine import Engine, EngineNotBuilt, locate_engine

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
VENV = Path(sys.prefix)


@pytest.fixture(scope="session")
def engine() -> Engine:
    try:
        return locate_engine()
    except EngineNotBuilt as e:
        pytest.fail(f"{e} (the README's test command does this for you)")


@dataclass
class PulumiProject:
    """A copy of a fixture program with its own file backend and passphrase."""

    dir: Path
    env: dict[str, str]
    engine: Engine

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the real `pulumi` CLI in this project; on failure the assertion shows its output."""
        proc = self.engine.cli(*args, cwd=self.dir, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def export(self) -> dict:
        return json.loads(self.run("stack", "export").stdout)


def make_project(fixture: str, dest: Path, engine: Engine, name: str | None = None) -> PulumiProject:
    """Copy tests/fixtures/<fixture> to dest with a Pulumi.yaml that uses our venv."""
    shutil.copytree(FIXTURES / fixture, dest)
    (dest / "Pulumi.yaml").write_text(
        f"name: {name or fixture.replace('_', '-')}\n"
        "runtime:\n  name: python\n  options:\n    toolchain: pip\n"
        f"    virtualenv: {VENV}\n"
    )
    state = dest / ".state"
    state.mkdir()
    env = {**os.environ, **engine.env(backend_url=f"file://{state}", passphrase="test-passphrase")}
    return PulumiProject(dir=dest, env=env, engine=engine)


@pytest.fixture
def password_project(tmp_path: Path, engine: Engine) -> Iterator[PulumiProject]:
    project = make_project("password_stack", tmp_path / "password_stack", engine)
    yield project
    # Leave nothing behind even when a test failed half-way.
    project.run("destroy", "--yes", "--skip-preview", "-s", "dev", check=False)


# --- Real local services ------------------------------------------------------------------------
DATA = Path(os.environ.get("IOTISTIC_DATA", ROOT / ".data"))


@pytest.fixture(scope="session")
def service_data_dir() -> Iterator[Path]:
    """A per-session folder under the project's data folder (the service users can traverse it)."""
    path = DATA / f"test-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(service_data_dir: Path):
    from devenv.ports import free_port
    from devenv.postgres import LocalPostgres

    pg = LocalPostgres(service_data_dir / "postgres", port=free_port())
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def mosquitto(service_data_dir: Path):
    from devenv.mosquitto import LocalMosquitto
    from devenv.ports import free_port

    broker = LocalMosquitto(service_data_dir / "mosquitto", port=free_port(), ws_port=free_port())
    broker.start()
    yield broker
    broker.stop()


# --- AWS, played by moto's server --------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> Iterator[str]:
    """A moto server (S3, Secrets Manager, ...) on a free loopback port, for the session."""
    from devenv.ports import free_port, wait_listening

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        if not wait_listening(port, timeout=30):
            pytest.fail(f"moto server did not listen on {port}:\n{log.read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def no_ambient_aws(monkeypatch, tmp_path) -> None:
    """No AWS credentials or config from this machine: only what a test passes explicitly counts."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # Without credentials boto3 would otherwise wait for an EC2 metadata service.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- Local Kubernetes control plane --------------------------------------------------------------
@pytest.fixture(scope="session")
def cluster():
    """The project's local control plane (devenv/cluster.py), started once for the whole session.

    A cluster the user started (`python -m devenv cluster start`) is reused and left running. One
    started by tests is stopped by the last test session using it (sessions may overlap: each holds
    a lease file named by its pid). `.kubeconfig` is the admin kubeconfig.
    """
    from devenv.cluster import LocalCluster
    from devenv.ports import PortInUse
    from devenv.service_user import ServiceError

    local = LocalCluster()
    leases = local.data_dir / "test-sessions"
    leases.mkdir(parents=True, exist_ok=True)
    lease = leases / str(os.getpid())
    lease.touch()
    started_by_tests = local.data_dir / "started-by-tests"
    if not local.running():
        try:
            # Without the real node, even one the user added: tests/node run their own.
            local.start(control_plane_only=True)
        except (ServiceError, PortInUse) as e:
            lease.unlink()
            pytest.fail(f"the local cluster did not start: {e}")
        started_by_tests.touch()
    yield local
    lease.unlink()
    if started_by_tests.exists() and not [p for p in leases.iterdir() if _alive(int(p.name))]:
        local.stop()
        started_by_tests.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
