"""Engine benchmark: toolchain build time (cold, warm) and `pulumi up`/`preview` of a small stack.

Prints, from one run:
- cold toolchain time: toolchain/build-engine.sh into an empty throw-away cache (Go modules
  downloaded and everything compiled), and warm time: the same script on the real cache;
- the median of 3 `preview` and 3 `up` runs of the password stack (tests/fixtures/password_stack),
  through the CLI and through the Automation API, side by side, with ratios against the CLI.

Usage: .venv/bin/python bench/engine.py [--skip-cold] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pulumi import automation as auto  # noqa: E402

from automation.engine import locate_engine  # noqa: E402
from tests.conftest import make_project  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build_engine(cache: Path) -> float:
    env = {**os.environ, "IOTISTIC_CACHE": str(cache)}
    return timed(lambda: subprocess.run([str(ROOT / "toolchain/build-engine.sh")], env=env, check=True))


def cli_runs(project, runs: int) -> tuple[list[float], list[float]]:
    project.run("stack", "init", "cli")
    previews = [timed(lambda: project.run("preview")) for _ in range(runs)]
    ups = []
    for _ in range(runs):
        ups.append(timed(lambda: project.run("up", "--yes", "--skip-preview")))
        project.run("destroy", "--yes", "--skip-preview")
    return previews, ups


def automation_runs(project, runs: int) -> tuple[list[float], list[float]]:
    env = {k: v for k, v in project.env.items() if k.startswith("PULUMI_") or k == "PATH"}
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(project.dir), env_vars=env, pulumi_command=project.engine.command()
    )
    stack = auto.create_stack("auto", work_dir=str(project.dir), opts=opts)
    previews = [timed(stack.preview) for _ in range(runs)]
    ups = []
    for _ in range(runs):
        ups.append(timed(stack.up))
        stack.destroy()
    return previews, ups


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold build (it takes minutes)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    engine = locate_engine()
    cold = None
    if not args.skip_cold:
        with tempfile.TemporaryDirectory(prefix="iotistic-cold-") as tmp:
            print("cold toolchain build into an empty cache (this takes minutes)…", flush=True)
            cold = build_engine(Path(tmp))
            # Go marks module cache files read-only; make them removable.
            subprocess.run(["chmod", "-R", "u+w", tmp], check=False)
    warm = build_engine(engine.cache)

    with tempfile.TemporaryDirectory(prefix="iotistic-bench-") as tmp:
        project = make_project("password_stack", Path(tmp) / "p", engine)
        cli_prev, cli_up = cli_runs(project, args.runs)
        auto_prev, auto_up = automation_runs(project, args.runs)
        shutil.rmtree(project.dir, ignore_errors=True)

    med = statistics.median
    print("\n== toolchain (toolchain/build-engine.sh) ==")
    if cold is not None:
        print(f"cold build            {cold:8.1f} s")
    speedup = f"   ({cold / warm:.0f}x faster than cold)" if cold else ""
    print(f"warm (no-op) run      {warm:8.2f} s{speedup}")
    print(f"\n== password stack, median of {args.runs} runs ==")
    print(f"{'operation':<10}{'CLI (s)':>10}{'Automation API (s)':>22}{'API/CLI':>10}")
    for name, c, a in (("preview", cli_prev, auto_prev), ("up", cli_up, auto_up)):
        print(f"{name:<10}{med(c):>10.2f}{med(a):>22.2f}{med(a) / med(c):>10.2f}")


if __name__ == "__main__":
    main()
