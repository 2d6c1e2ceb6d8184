"""Signup benchmark: the billing API under load, and signup-to-running-instance times.

    .venv/bin/python bench/signup.py            # about 5 minutes on 2 cores

Prints, from one run on this machine:
- the bcrypt-only bound: 16 threads doing nothing but bcrypt hashes at the service's cost (10),
  i.e. the most signups per second this machine could ever answer;
- signup throughput and p50/p99 latency at concurrency 16 against `python -m billing serve`
  (waitress, real Postgres), with its ratio to the bound (goal >= 80%, p99 < 1 s). Bound and
  signups alternate in --rounds short rounds and the median ratio is reported, so a load that
  other programs put on the machine weighs on both sides alike;
- time from `POST /api/customers/signup` to `deployment_status = deployed` (a real
  `python -m billing worker`, the Pulumi engine, the local control plane) for 1 signup, then for
  10 simultaneous ones (goal: p50 < 15 s for one).

Everything runs in a temp folder (its own Postgres, state backend and stack config); every
instance is offboarded through the API and its namespace checked gone at the end. A cluster this
script had to start is stopped again.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bcrypt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devenv.cluster import LocalCluster  # noqa: E402
from devenv.ports import free_port, wait_listening  # noqa: E402
from devenv.postgres import LocalPostgres  # noqa: E402
from licensing.keys import generate_private_key_pem  # noqa: E402

ROUNDS = 10
CONCURRENCY = 16
RATIO_GOAL = 0.80
P99_GOAL = 1.0
DEPLOY_P50_GOAL = 15.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bcrypt_bound(seconds: float, threads: int = CONCURRENCY) -> float:
    """Hashes per second with `threads` threads hashing at ROUNDS for `seconds` (bcrypt drops the GIL)."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        while time.monotonic() < stop:
            bcrypt.hashpw(b"correct horse battery", bcrypt.gensalt(ROUNDS))
            counts[i] += 1

    started = time.monotonic()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.monotonic() - started)


class Client:
    """One keep-alive HTTP connection (per thread), JSON in and out."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {})


def signup_body(tag: str, i: int) -> dict:
    return {
        "email": f"{tag}-{i}@bench.example",
        "password": "correct horse battery",
        "company_name": f"Bench {i}",
    }


def signup_load(port: int, total: int, tag: str) -> tuple[float, list[float], int]:
    """`total` signups from CONCURRENCY threads; returns (signups/s, latencies, failures)."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    counter = iter(range(total))

    def work() -> None:
        client = Client(port)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            status, _ = client.call("POST", "/api/customers/signup", signup_body(tag, i))
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                failures[0] += status != 201

    started = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(CONCURRENCY)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return total / (time.perf_counter() - started), latencies, failures[0]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def time_to_deployed(port: int, admin: str, tag: str, n: int, timeout: float = 600) -> list[float]:
    """Sign up `n` customers at once; seconds from each request to its `deployed` status."""
    started: dict[str, float] = {}
    ids: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        t0 = time.monotonic()
        status, body = Client(port).call("POST", "/api/customers/signup", signup_body(tag, i))
        if status != 201:
            raise RuntimeError(f"signup failed: {status} {body}")
        with lock:
            started[body["customer_id"]] = t0
            ids.append(body["customer_id"])

    pool = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    done: dict[str, float] = {}
    client = Client(port)
    deadline = time.monotonic() + timeout
    while len(done) < n:
        for cid in ids:
            if cid in done:
                continue
            _, body = client.call("GET", f"/api/customers/{cid}", token=admin)
            if body.get("deployment_status") == "deployed":
                done[cid] = time.monotonic() - started[cid]
            elif body.get("deployment_status") == "failed":
                raise RuntimeError(f"deploy of {cid} failed: {body.get('deployment_error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(done)} of {n} deployed after {timeout:.0f} s")
        time.sleep(0.1)
    return [done[c] for c in ids]


def offboard_all(port: int, admin: str, api, timeout: float = 600) -> list[str]:
    """Offboard every customer through the API; returns namespaces still present afterwards."""
    client = Client(port)
    _, listed = client.call("GET", "/api/admin/customers?limit=500", token=admin)
    ids = [c["id"] for c in listed.get("customers", []) if c["status"] != "deleted"]
    for cid in ids:
        client.call("DELETE", f"/api/customers/{cid}", token=admin)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [cid for cid in ids if api.get(f"/api/v1/namespaces/customer-{cid}") is not None]
        if not left:
            return []
        time.sleep(1)
    return [f"customer-{cid}" for cid in left]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--signups", type=int, default=200, help="signups per round of the throughput run (default 200)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="bound/signup rounds (default 3)")
    parser.add_argument("--bound-seconds", type=float, default=8.0, help="seconds of each bound round")
    parser.add_argument("--simultaneous", type=int, default=10)
    parser.add_argument("--worker-concurrency", type=int, default=4)
    args = parser.parse_args()

    cluster = LocalCluster()
    started_cluster = not cluster.running()
    if started_cluster:
        print("starting the local cluster…", flush=True)
        cluster.start()
    tag = f"bench-{secrets.token_hex(2)}"
    print(
        f"cpus {os.cpu_count()}, load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
        flush=True,
    )
    data = Path(os.environ.get("IOTISTIC_DATA", ROOT / ".data"))
    data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="signup-bench-", dir=data) as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the postgres user must traverse it
        pg = LocalPostgres(work / "postgres", port=free_port())
        pg.start()
        key = work / "signing.pem"
        key.write_bytes(generate_private_key_pem())
        admin = "bench-admin-" + secrets.token_hex(8)
        base = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "IOTISTIC_BACKEND"))},
            "LICENSE_SIGNING_KEY_FILE": str(key),
            "LICENSE_KEY_ID": "bench-1",
            "BCRYPT_ROUNDS": str(ROUNDS),
            "BILLING_THREADS": str(CONCURRENCY),
            "ADMIN_TOKEN": admin,
            "IOTISTIC_DATA": str(work / "data"),
            "IOTISTIC_BACKEND_URL": f"file://{work / 'state'}",
            "IOTISTIC_STACK_CONFIG_DIR": str(work / "stacks"),
            "IOTISTIC_KUBECONFIG": str(cluster.kubeconfig),
            "PULUMI_CONFIG_PASSPHRASE": "bench-passphrase",
            "WORKER_CONCURRENCY": str(args.worker_concurrency),
            "LOG_LEVEL": "WARNING",
        }
        (work / "state").mkdir()
        procs: list[subprocess.Popen] = []
        left: list[str] = []
        try:
            # --- throughput: its own database, no worker (deploys would compete for the CPUs) -------
            port = free_port()
            load_env = {**base, "DATABASE_URL": pg.create_database("signup_load"), "BILLING_PORT": str(port)}
            procs.append(start([sys.executable, "-m", "billing", "serve"], load_env, work / "serve-load.log"))
            if not wait_listening(port, 60):
                raise RuntimeError((work / "serve-load.log").read_text()[-2000:])
            signup_load(port, 32, f"{tag}-warm")  # warm-up: pool connections, imports
            bounds, rates, latencies, failures = [], [], [], 0
            for r in range(args.rounds):
                print(
                    f"round {r + 1}/{args.rounds}: bcrypt-only bound, then {args.signups} signups…",
                    flush=True,
                )
                bounds.append(bcrypt_bound(args.bound_seconds))
                rate, lat, failed = signup_load(port, args.signups, f"{tag}-r{r}")
                rates.append(rate)
                latencies += lat
                failures += failed
            stop(procs.pop())

            # --- signup to deployed: API + worker + engine + cluster --------------------------------
            port = free_port()
            deploy_env = {
                **base,
                "DATABASE_URL": pg.create_database("signup_deploy"),
                "BILLING_PORT": str(port),
            }
            procs.append(start([sys.executable, "-m", "billing", "serve"], deploy_env, work / "serve.log"))
            procs.append(start([sys.executable, "-m", "billing", "worker"], deploy_env, work / "worker.log"))
            if not wait_listening(port, 60):
                raise RuntimeError((work / "serve.log").read_text()[-2000:])
            print("1 signup to deployed…", flush=True)
            one = time_to_deployed(port, admin, f"{tag}-one", 1)
            print(f"{args.simultaneous} simultaneous signups to deployed…", flush=True)
            many = time_to_deployed(port, admin, f"{tag}-many", args.simultaneous)
            print("offboarding every bench customer…", flush=True)
            left = offboard_all(port, admin, cluster.api())
        finally:
            for proc in procs:
                stop(proc)
            pg.stop()
    if started_cluster:
        cluster.stop()

    p50, p99 = pct(latencies, 0.50), pct(latencies, 0.99)
    ratios = [r / b for r, b in zip(rates, bounds, strict=True)]
    rounds = ", ".join(f"{r:.1f}/{b:.1f}" for r, b in zip(rates, bounds, strict=True))
    rows = [
        (
            "bcrypt-only bound (16 threads, cost 10)",
            f"{statistics.median(bounds):.1f}/s",
            "hashes per second: the ceiling (median of the rounds)",
        ),
        (
            f"signups at concurrency {CONCURRENCY} ({len(latencies)}, {failures} failed)",
            f"{statistics.median(rates):.1f}/s",
            f"median ratio {statistics.median(ratios):.0%} of the bound (goal >= {RATIO_GOAL:.0%}); "
            f"rounds signups/bound: {rounds}",
        ),
        (
            "  latency p50 / p99",
            f"{p50 * 1000:.0f} ms",
            f"p99 {p99 * 1000:.0f} ms (goal < {P99_GOAL * 1000:.0f} ms)",
        ),
        ("signup to deployed, 1 signup", f"{one[0]:.1f} s", f"goal p50 < {DEPLOY_P50_GOAL:.0f} s"),
        (
            f"signup to deployed, {args.simultaneous} simultaneous",
            f"{statistics.median(many):.1f} s",
            f"p50; fastest {min(many):.1f} s, slowest {max(many):.1f} s "
            f"(worker concurrency {args.worker_concurrency})",
        ),
    ]
    print(f"\n== signup (billing API, worker, local control plane; {os.cpu_count()} CPUs) ==")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>9}  {note}".rstrip())
    print(
        "clean-up: every bench namespace is gone"
        if not left
        else f"WARNING: still present: {', '.join(left)}"
    )


if __name__ == "__main__":
    main()
