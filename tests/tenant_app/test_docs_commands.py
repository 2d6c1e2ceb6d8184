"""docs/tenant-app.md's "Running it locally" commands work as written, with IOTISTIC_DATA set.

The block is run by bash exactly as a user would paste it, in a data folder and on ports of its
own (IOTISTIC_PORT_OFFSET, API_PORT...), so it runs beside anything else on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devenv.ports import DEFAULT_PORTS, free_port

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "tenant-app.md"


def documented_block(title: str) -> str:
    """The first ```bash block after the heading `title`."""
    text = DOC.read_text()
    section = text[text.index(title) :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def free_offset() -> int:
    """An offset that puts every devenv port on a free port (and away from the usual offsets)."""
    for offset in range(3000, 6000, 37):
        ports = [p + offset for p in DEFAULT_PORTS.values()]
        if max(ports) < 65000 and all(_bindable(p) for p in ports):
            return offset
    pytest.fail("no free port offset for devenv")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_running_it_locally_works_as_written_with_iotistic_data_set(service_data_dir):
    block = documented_block("## Running it locally")
    assert "IOTISTIC_DATA" in block and ".data/" not in block  # no path that ignores IOTISTIC_DATA
    data = service_data_dir / "docs-walkthrough"
    env = {
        **os.environ,
        "IOTISTIC_DATA": str(data),
        "IOTISTIC_PORT_OFFSET": str(free_offset()),
        "API_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
        "EXPORTER_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    out_file, err_file = data.parent / "docs-walkthrough.out", data.parent / "docs-walkthrough.err"
    # Files, not pipes: the services the block leaves in the background keep its output open.
    with out_file.open("w") as stdout, err_file.open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        proc.wait(timeout=240)
    finally:
        # The block leaves the services running in the background, as a user's shell would.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        subprocess.run(
            [sys.executable, "-m", "devenv", "all", "stop"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=120,
        )
    out, err = out_file.read_text(), err_file.read_text()
    assert proc.returncode == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}"
    assert "Traceback" not in err, err[-5000:]
    # The last command prints the latest reading of each simulated device.
    latest = json.loads(out.strip().splitlines()[-1])
    assert sorted(r["device_id"] for r in latest["readings"]) == ["sim-1", "sim-2", "sim-3"]
    assert (data / "postgres").is_dir() and (data / "keys" / "license.jwt").is_file()
