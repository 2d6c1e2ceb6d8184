"""`python -m devenv SERVICE start|stop|status`: the local Postgres and Mosquitto of the demo, and
the local Kubernetes control plane (`cluster`; not part of `all`, it needs toolchain/build-cluster.sh).

`cluster start --real-node` adds the one real node (kubelet + containerd, devenv/node.py);
`python -m devenv images build` builds the node's images (devenv/images.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from devenv.cluster import LocalCluster
from devenv.images import ImageBuilder, import_images
from devenv.mosquitto import LocalMosquitto
from devenv.ports import PortInUse
from devenv.postgres import LocalPostgres
from devenv.service_user import ServiceError

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("IOTISTIC_DATA", ROOT / ".data"))


def services() -> dict[str, LocalPostgres | LocalMosquitto]:
    return {
        "postgres": LocalPostgres(DATA / "postgres"),
        "mosquitto": LocalMosquitto(DATA / "mosquitto"),
    }


def cluster_command(action: str, cluster: LocalCluster | None = None, real_node: bool | None = None) -> int:
    """start|stop|status of the local Kubernetes control plane, with what a user needs to reach it."""
    cluster = cluster or LocalCluster(DATA / "cluster")
    try:
        if action == "start":
            node = cluster.real_node
            wants_node = real_node if real_node is not None else node.enabled()
            if cluster.running() and node.running() == wants_node and not cluster.apiserver_outdated():
                print(f"cluster: already running\n{cluster.describe()}")
                return 0
            began = time.monotonic()
            cluster.start(real_node=real_node)
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


def images_command(action: str, only: list[str], cluster: LocalCluster | None = None) -> int:
    """build|list the real node's images; a build is imported into the node when it runs."""
    builder = ImageBuilder()
    try:
        if action == "list":
            for spec in builder.catalog.wanted():
                print(f"{spec.ref:<48} {spec.dockerfile.relative_to(ROOT)}")
            return 0
        result = builder.build(only or None)
        print(
            f"images: {len(result.tags)} ready in {result.seconds:.1f} s "
            f"({result.built_steps} steps built, {result.cached_steps} cached)"
        )
        node = (cluster or LocalCluster(DATA / "cluster")).real_node
        if node.running():
            imported = import_images(builder, result.tags, node.ctr, node.dir / "logs" / "images.log")
            print(f"imported into the real node: {', '.join(imported) or 'nothing new'}")
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv", description=__doc__)
    parser.add_argument("service", choices=["postgres", "mosquitto", "cluster", "images", "all"])
    parser.add_argument("action", choices=["start", "stop", "status", "build", "list"])
    parser.add_argument("names", nargs="*", help="images: build only these (e.g. postgres iotistic/api)")
    node = parser.add_mutually_exclusive_group()
    node.add_argument(
        "--real-node",
        dest="real_node",
        action="store_true",
        default=None,
        help="cluster start: add the real node (remembered for later starts)",
    )
    node.add_argument(
        "--no-real-node", dest="real_node", action="store_false", help="cluster start: remove the real node"
    )
    args = parser.parse_args(argv)
    if args.service == "images":
        if args.action not in ("build", "list"):
            parser.error("images: the actions are build and list")
        return images_command(args.action, args.names)
    if args.action in ("build", "list"):
        parser.error(f"{args.service}: the actions are start, stop and status")
    if args.service == "cluster":
        return cluster_command(args.action, real_node=args.real_node)
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
