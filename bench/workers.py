"""Scale-out benchmark: more provisioning workers share one backend and one job queue (issue 11).

    .venv/bin/python bench/workers.py                        # 100 customers, 1 worker then 2
    .venv/bin/python bench/workers.py --customers 20         # a shorter run

Each worker is what another machine would run: `python -m billing worker` with its own data
folder (work dirs, stack config) and its own engine home (IOTISTIC_PULUMI_HOME), sharing only the
state backend (S3, on moto's server) and the billing database whose procrastinate queue holds the
jobs. For each round (1 worker, then 2), on a fresh database and bucket: N customers sign up over
the billing API (no worker running: their deploy jobs queue up), every customer also gets an
operator's "deploy again" request as soon as its first deploy has started (a second job for the
same stack while the first runs), the workers start together, and the clock runs until every
customer is `deployed` and no deploy job is left. Printed: seconds per round and the
ratio, deploys each worker ran, and checks that each stack was deployed by one worker at a time
(no deploy found its stack locked, no job failed) and exists once in the backend.

With --worker-concurrency 1 (the default) each worker runs one deploy at a time, as one small
machine would: the second worker is a second machine's worth of deploys. The control plane is
started here on free ports, sized for N customers, and stopped at the end; all data is removed.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automation.bookkeeping import deployed_stacks  # noqa: E402
from automation.workspace import StackSettings, ensure_s3_backend, s3_backend_url  # noqa: E402
from bench.signup import Client, signup_body, start, stop  # noqa: E402
from devenv.cluster import LocalCluster  # noqa: E402
from devenv.ports import free_port, wait_listening  # noqa: E402
from devenv.postgres import LocalPostgres  # noqa: E402
from licensing.keys import generate_private_key_pem  # noqa: E402

AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
LOCKED = re.compile(r"currently locked|ConcurrentUpdateError|Another update is currently in progress", re.I)


def sign_up(port: int, n: int, tag: str, threads: int = 8) -> list[str]:
    ids: list[str] = []
    lock = threading.Lock()
    todo = iter(range(n))

    def work() -> None:
        client = Client(port)
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            status, body = client.call("POST", "/api/customers/signup", signup_body(tag, i))
            if status != 201:
                raise RuntimeError(f"signup failed: {status} {body}")
            with lock:
                ids.append(body["customer_id"])

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return ids


def run_to_the_end(port: int, admin: str, ids: list[str], database_url: str, timeout: float) -> None:
    """Wait until every customer is deployed and the queue is empty. Each customer gets a second
    deploy request once its first deploy has started: its job waits for the stack's lock."""
    import psycopg

    client = Client(port)
    again: set[str] = set()
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        _, listed = client.call("GET", f"/api/admin/customers?limit={len(ids) + 10}", token=admin)
        states = {c["id"]: c["deployment_status"] for c in listed["customers"]}
        failed = [cid for cid in ids if states.get(cid) == "failed"]
        if failed:
            _, body = client.call("GET", f"/api/customers/{failed[0]}", token=admin)
            raise RuntimeError(f"{len(failed)} deploys failed, e.g. {body.get('deployment_error')}")
        for cid in ids:
            if cid not in again and states.get(cid) in ("deploying", "deployed"):
                status, body = client.call("POST", f"/api/admin/customers/{cid}/deploy", token=admin)
                if status >= 400:
                    raise RuntimeError(f"re-deploy request refused: {status} {body}")
                again.add(cid)
        with psycopg.connect(database_url) as conn:
            queued = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
                "AND task_name = 'billing:deploy'"
            ).fetchone()[0]
        done = sum(states.get(cid) == "deployed" for cid in ids)
        if done == len(ids) and len(again) == len(ids) and queued == 0:
            return
        if done != last and done % max(1, len(ids) // 10) == 0:
            print(f"      {done}/{len(ids)} deployed, {queued} deploy jobs queued or running", flush=True)
            last = done
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {len(ids)} deployed after {timeout:.0f} s")
        time.sleep(0.5)


def one_round(
    workers: int, n: int, concurrency: int, work: Path, pg: LocalPostgres, cluster: LocalCluster, moto: str
) -> dict:
    tag = f"w{workers}-{secrets.token_hex(2)}"
    folder = work / tag
    folder.mkdir()
    key = folder / "signing.pem"
    key.write_bytes(generate_private_key_pem())
    admin = "bench-admin-" + secrets.token_hex(8)
    backend = s3_backend_url(f"bench-{tag}", moto)
    ensure_s3_backend(backend, AWS)
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "IOTISTIC_", "AWS_"))},
        **AWS,
        "IOTISTIC_CACHE": os.environ.get("IOTISTIC_CACHE", str(ROOT / ".cache")),
        "DATABASE_URL": pg.create_database(tag.replace("-", "_")),
        "LICENSE_SIGNING_KEY_FILE": str(key),
        "LICENSE_KEY_ID": "bench-1",
        "ADMIN_TOKEN": admin,
        "IOTISTIC_BACKEND_URL": backend,
        "IOTISTIC_KUBECONFIG": str(cluster.kubeconfig),
        "PULUMI_CONFIG_PASSPHRASE": "bench-passphrase",
        "WORKER_CONCURRENCY": str(concurrency),
        "LOG_LEVEL": "INFO",
    }
    port = free_port()
    procs = [
        start(
            [sys.executable, "-m", "billing", "serve"],
            {**base, "BILLING_PORT": str(port)},
            folder / "serve.log",
        )
    ]
    try:
        if not wait_listening(port, 60):
            raise RuntimeError((folder / "serve.log").read_text()[-2000:])
        ids = sign_up(port, n, tag)
        print(f"    {workers} worker(s): {n} customers signed up, their deploy jobs queued", flush=True)
        started = time.monotonic()
        logs = []
        for i in range(workers):
            own = folder / f"worker-{i}"
            env = {
                **base,
                "IOTISTIC_DATA": str(own / "data"),
                "IOTISTIC_STACK_CONFIG_DIR": str(own / "stacks"),
                "IOTISTIC_PULUMI_HOME": str(own / "pulumi-home"),
            }
            logs.append(own / "worker.log")
            own.mkdir()
            procs.append(start([sys.executable, "-m", "billing", "worker"], env, logs[-1]))
        run_to_the_end(port, admin, ids, base["DATABASE_URL"], timeout=60 + 60 * n)
        seconds = time.monotonic() - started
    finally:
        for proc in procs:
            stop(proc)
    texts = [log.read_text() for log in logs]
    stacks = deployed_stacks(StackSettings(backend, "", None, folder / "reader", tuple(AWS.items())))
    return {
        "workers": workers,
        "seconds": seconds,
        "deploys": [t.count("deploy started") for t in texts],
        "locked": sum(len(LOCKED.findall(t)) for t in texts),
        "stacks": sum(1 for cid in ids if cid in stacks),
        "customers": n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--worker-concurrency", type=int, default=1, help="deploys at once per worker")
    args = parser.parse_args()
    if args.customers < 1 or args.worker_concurrency < 1:
        parser.error("--customers and --worker-concurrency must be at least 1")
    work = ROOT / ".data" / f"bench-workers-{secrets.token_hex(3)}"
    work.mkdir(parents=True)
    work.chmod(0o755)  # the postgres user must traverse it
    cluster = LocalCluster.on_free_ports(work / "cluster").sized_for(args.customers * 2)
    moto_port = free_port()
    results = []
    with (work / "moto.log").open("w") as out:
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pg = LocalPostgres(work / "postgres", port=free_port())
    try:
        print(f"{os.cpu_count()} CPUs; control plane with {cluster.nodes} simulated nodes", flush=True)
        cluster.start()
        pg.start()
        if not wait_listening(moto_port, 30):
            raise RuntimeError("moto server did not start")
        for workers in (1, 2):
            results.append(
                one_round(
                    workers,
                    args.customers,
                    args.worker_concurrency,
                    work,
                    pg,
                    cluster,
                    f"http://127.0.0.1:{moto_port}",
                )
            )
    finally:
        moto.terminate()
        pg.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    one, two = results
    print(
        f"\n== {args.customers} customers, 2 deploy jobs each, worker concurrency {args.worker_concurrency}"
    )
    for r in results:
        print(
            f"{r['workers']} worker(s): {r['seconds']:7.1f} s "
            f"({r['seconds'] / r['customers']:.2f} s per customer); "
            f"deploys per worker {r['deploys']}; stacks in S3 {r['stacks']}/{r['customers']}; "
            f"deploys that found their stack locked: {r['locked']}"
        )
    print(
        f"2 workers took {two['seconds'] / one['seconds']:.0%} of 1 worker's time "
        f"({one['seconds'] / two['seconds']:.2f}x faster)"
    )
    ok = all(r["locked"] == 0 and r["stacks"] == r["customers"] for r in results) and all(two["deploys"])
    print("checks: " + ("every stack once, never locked, both workers deployed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
