"""`python -m devenv SERVICE start|stop|status`: the demo's local Postgres, Mosquitto and stripe-mock
(`all`), the local Kubernetes control plane (`cluster`) and the billing API with its worker
(`billing`, which provisions into that cluster)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from devenv.billing_service import LocalBilling
from devenv.cluster import LocalCluster
from devenv.mosquitto import LocalMosquitto
from devenv.ports import PortInUse
from devenv.postgres import LocalPostgres
from devenv.service_user import ServiceError
from devenv.stripe_mock import LocalStripeMock

DATA = Path(os.environ.get("IOTISTIC_DATA", Path(__file__).resolve().parent.parent / ".data"))


def services() -> dict[str, LocalPostgres | LocalMosquitto | LocalStripeMock]:
    return {
        "postgres": LocalPostgres(DATA / "postgres"),
        "mosquitto": LocalMosquitto(DATA / "mosquitto"),
        "stripe-mock": LocalStripeMock(DATA / "stripe-mock"),
    }


def cluster_command(action: str, cluster: LocalCluster | None = None) -> int:
    """start|stop|status of the local Kubernetes control plane, with what a user needs to reach it."""
    cluster = cluster or LocalCluster(DATA / "cluster")
    try:
        if action == "start":
            if cluster.running():
                print(f"cluster: already running\n{cluster.describe()}")
                return 0
            began = time.monotonic()
            cluster.start()
            print(f"cluster: started in {time.monotonic() - began:.1f} s\n{cluster.describe()}")
        elif action == "stop":
            cluster.stop()
            print("cluster: stopped")
        else:
            state = "running" if cluster.running() else "stopped"
            print(f"cluster: {state}\n{cluster.describe()}")
    except (ServiceError, PortInUse) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def billing_command(action: str) -> int:
    """start|stop|status of the local billing API and worker (and what they need)."""
    billing = LocalBilling(DATA)
    try:
        if action == "start":
            already = billing.running()
            billing.start()
            state = "already running" if already else "started"
            print(f"billing: {state} on {billing.url} (API) with its worker; logs in {billing.dir}")
        elif action == "stop":
            billing.stop()
            print("billing: stopped")
        else:
            state = f"running on {billing.url}" if billing.running() else "stopped"
            print(f"billing: {state} (logs in {billing.dir})")
    except (ServiceError, PortInUse) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv", description=__doc__)
    parser.add_argument(
        "service", choices=["postgres", "mosquitto", "stripe-mock", "cluster", "billing", "all"]
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    if args.service == "cluster":
        return cluster_command(args.action)
    if args.service == "billing":
        return billing_command(args.action)
    chosen = services() if args.service == "all" else {args.service: services()[args.service]}
    for name, svc in chosen.items():
        try:
            if args.action == "start":
                already = svc.running()
                svc.start()
                print(f"{name}: {'already running' if already else 'started'} on 127.0.0.1:{svc.port}")
            elif args.action == "stop":
                svc.stop()
                print(f"{name}: stopped")
            else:
                state = f"running on 127.0.0.1:{svc.port}" if svc.running() else "stopped"
                print(f"{name}: {state} (data in {svc.data_dir})")
        except (ServiceError, PortInUse) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
