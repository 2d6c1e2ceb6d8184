"""`python -m devenv SERVICE start|stop|status`: the demo's local Postgres, Mosquitto and stripe-mock
(`all`), the local Kubernetes control plane (`cluster`) and the billing API with its worker
(`billing`, which provisions into that cluster).

`python -m devenv env [--database NAME]` prints `export` lines for the running services (the
tenant app's DATABASE_URL, MQTT_* variables), for `eval "$(python -m devenv env ...)"`.

Ports and the data folder come from flags, else the environment, else the defaults, so a second
checkout can run beside the first:

    python -m devenv --port-offset 200 --data-dir /tmp/second all start
    IOTISTIC_PORT_OFFSET=200 IOTISTIC_DATA=/tmp/second python -m devenv all start   # the same
    python -m devenv --port postgres=56000 postgres start

`cluster start --real-node` adds the one real node (kubelet + containerd, devenv/node.py);
`python -m devenv images build|list` builds the node's images (devenv/images.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devenv.billing_service import LocalBilling
from devenv.cluster import LocalCluster
from devenv.images import ImageBuilder, import_images
from devenv.mosquitto import ADMIN_USER, LocalMosquitto
from devenv.ports import (
    PortConfigError,
    PortInUse,
    parse_port_assignment,
    port_variable,
    resolve_ports,
)
from devenv.postgres import LocalPostgres
from devenv.service_user import ServiceError
from devenv.stripe_mock import LocalStripeMock

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Devenv:
    """Where devenv keeps its data and which ports its services use (flags > environment > defaults)."""

    data_dir: Path
    ports: dict[str, int]

    @classmethod
    def from_args(
        cls, data_dir: Path | None = None, offset: int | None = None, overrides: dict[str, int] | None = None
    ) -> Devenv:
        data = data_dir or Path(os.environ.get("IOTISTIC_DATA", ROOT / ".data"))
        return cls(data.resolve(), resolve_ports(offset=offset, overrides=overrides))

    def postgres(self) -> LocalPostgres:
        return LocalPostgres(self.data_dir / "postgres", port=self.ports["postgres"])

    def mosquitto(self) -> LocalMosquitto:
        return LocalMosquitto(
            self.data_dir / "mosquitto", port=self.ports["mosquitto"], ws_port=self.ports["mosquitto-ws"]
        )

    def cluster(self) -> LocalCluster:
        p = self.ports
        return LocalCluster(
            data_dir=self.data_dir / "cluster",
            apiserver_port=p["kube-apiserver"],
            etcd_port=p["etcd"],
            etcd_peer_port=p["etcd-peer"],
            controller_manager_port=p["kube-controller-manager"],
            scheduler_port=p["kube-scheduler"],
            kwok_port=p["kwok"],
        )

    def stripe_mock(self) -> LocalStripeMock:
        return LocalStripeMock(self.data_dir / "stripe-mock", port=self.ports["stripe-mock"])

    def billing(self) -> LocalBilling:
        return LocalBilling(self.data_dir, port=self.ports["billing"])

    def apply_to_environment(self) -> None:
        """Make these choices this process's and its children's (the billing API and worker, and
        the services they start, read IOTISTIC_DATA and IOTISTIC_PORT_<NAME>)."""
        os.environ["IOTISTIC_DATA"] = str(self.data_dir)
        for name, port in self.ports.items():
            os.environ[port_variable(name)] = str(port)

    def services(self) -> dict[str, LocalPostgres | LocalMosquitto | LocalStripeMock]:
        return {"postgres": self.postgres(), "mosquitto": self.mosquitto(), "stripe-mock": self.stripe_mock()}

    def exports(self, database: str | None = None) -> dict[str, str]:
        """The tenant app's variables for these services (DATABASE_URL only with `database`)."""
        broker = self.mosquitto()
        if not broker.running():
            raise ServiceError(f"mosquitto is not running on port {broker.port}: python -m devenv all start")
        out = {"IOTISTIC_DATA": str(self.data_dir)}
        if database:
            pg = self.postgres()
            if not pg.running():
                raise ServiceError(f"postgres is not running on port {pg.port}: python -m devenv all start")
            out["DATABASE_URL"] = pg.create_database(database)
        out |= {
            "MQTT_HOST": "127.0.0.1",
            "MQTT_PORT": str(broker.port),
            "MQTT_WEBSOCKET_URL": f"ws://127.0.0.1:{broker.ws_port}/mqtt",
            "MQTT_ADMIN_USERNAME": ADMIN_USER,
            "MQTT_ADMIN_PASSWORD": broker.admin_password,
        }
        return out


def services() -> dict[str, LocalPostgres | LocalMosquitto | LocalStripeMock]:
    """The services as the environment configures them (kept for scripts that import it)."""
    return Devenv.from_args().services()


def cluster_command(action: str, cluster: LocalCluster | None = None, real_node: bool | None = None) -> int:
    """start|stop|status of the local Kubernetes control plane, with what a user needs to reach it."""
    cluster = cluster or Devenv.from_args().cluster()
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


def billing_command(action: str, billing: LocalBilling | None = None) -> int:
    """start|stop|status of the local billing API and worker (and what they need)."""
    billing = billing or Devenv.from_args().billing()
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
        node = (cluster or Devenv.from_args().cluster()).real_node
        if node.running():
            imported = import_images(builder, result.tags, node.ctr, node.dir / "logs" / "images.log")
            print(f"imported into the real node: {', '.join(imported) or 'nothing new'}")
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devenv", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    services = ["postgres", "mosquitto", "stripe-mock", "cluster", "billing", "images", "all", "env"]
    parser.add_argument("service", choices=services)
    parser.add_argument("action", nargs="?", choices=["start", "stop", "status", "build", "list"])
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
    parser.add_argument(
        "--data-dir", type=Path, help="where data, logs and passwords live (default $IOTISTIC_DATA or .data)"
    )
    parser.add_argument(
        "--port-offset",
        type=str,
        metavar="N",
        help="add N to every default port (default $IOTISTIC_PORT_OFFSET or 0)",
    )
    parser.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="one service's port, e.g. postgres=56000 (default $IOTISTIC_PORT_<NAME>); repeatable",
    )
    parser.add_argument(
        "--database", metavar="NAME", help="with env: create NAME and export its DATABASE_URL"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.service == "env" and args.action:
        parser.error("env takes no action: python -m devenv env [--database NAME]")
    if args.service != "env" and not args.action:
        parser.error(f"say what to do: python -m devenv {args.service} start|stop|status")
    try:
        offset = None
        if args.port_offset is not None:
            if not args.port_offset.isascii() or not args.port_offset.lstrip("-").isdigit():
                raise PortConfigError(f"--port-offset {args.port_offset!r} is not a whole number")
            offset = int(args.port_offset)
        overrides = dict(parse_port_assignment(p) for p in args.port)
        env = Devenv.from_args(args.data_dir, offset, overrides)
    except PortConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env.apply_to_environment()
    if args.service == "images":
        if args.action not in ("build", "list"):
            parser.error("images: the actions are build and list")
        return images_command(args.action, args.names, env.cluster())
    if args.action in ("build", "list"):
        parser.error(f"{args.service}: the actions are start, stop and status")
    if args.service == "env":
        try:
            exports = env.exports(args.database)
        except (ServiceError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    if args.service == "cluster":
        return cluster_command(args.action, env.cluster(), real_node=args.real_node)
    if args.service == "billing":
        return billing_command(args.action, env.billing())
    chosen = env.services() if args.service == "all" else {args.service: env.services()[args.service]}
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
