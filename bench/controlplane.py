"""Control-plane benchmark: N customers' Kubernetes objects on one local control plane, by flag variant.

    .venv/bin/python bench/controlplane.py                         # baseline, 1,000 customers (~6 min)
    .venv/bin/python bench/controlplane.py --customers 200 --variant no-watch-cache --variant gogc50
    .venv/bin/python bench/controlplane.py --variant controllers+gogc50   # '+' combines variants
    .venv/bin/python bench/controlplane.py --variant before-tuning # against the flags before issue 11
    .venv/bin/python bench/controlplane.py --list                  # the variants and their flags

Where the control plane's memory goes at 1,000 customers (issue 11) without 90 minutes of
`pulumi up`: the objects of one customer instance are rendered from the real program (program.py
with the kubernetes provider's render_yaml_to_directory, one instance per plan, no cluster), then
for each variant, on a fresh control plane of its own (LocalCluster.on_free_ports(...).sized_for(N)
with the variant's extra flags and environment, LocalCluster.with_tuning):

- N copies of the instance (customers c0000..., plans in turn, each in its own namespace) are
  applied as the provider applies them (server-side apply, namespace first, then quota, policies,
  secrets, volumes, services, workloads, ingress) by a pool of threads over keep-alive HTTPS;
- the bench waits until the controllers and kwok have caught up: every expected pod exists and is
  Running, then the control plane's CPU use is back near its idle rate;
- each process's RSS (VmRSS) and CPU seconds (utime + stime) are read from /proc: idle before the
  load, after it, the peak during it (sampled every second), and the CPU used by the load;
- a few behaviour checks (a new namespace gets `default` and kube-root-ca.crt; a customer's quota
  status, EndpointSlices and PVCs are filled in; deleting a customer's namespace removes it).

A final table compares each variant's growth and CPU with the baseline measured in the same run
(the baseline is added first when not asked for). Not reproduced: the provider's own reads and
await watches, and the hour-long spread of a real run (events older than --event-ttl expire there).

Everything lives in `.data/bench-controlplane-<random>/` and is removed at the end; every cluster
is stopped.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import ssl
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devenv.cluster import COMPONENTS, GO_COMPONENTS, UNNEEDED_CONTROLLERS, LocalCluster  # noqa: E402
from devenv.kubeapi import object_path  # noqa: E402

PLANS = ("starter", "professional", "enterprise")
# The template's customer id: five characters like c0000, so every copy has the same sizes.
TEMPLATE_ID = "zqxjk"
FIELD_MANAGER = "pulumi-kubernetes-bench"
# The provider's order: the namespace, then what admits pods, then the rest, workloads last.
KIND_ORDER = (
    "Namespace",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "StatefulSet",
    "Deployment",
    "Ingress",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
CATCH_UP_TIMEOUT = 1200.0
QUIET_WINDOW = 5.0
QUIET_MARGIN_CORES = 0.15
IDLE_WINDOW = 10.0

APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"


@dataclass(frozen=True)
class Variant:
    """Extra flags and environment per component (LocalCluster.with_tuning), and what they do."""

    about: str
    flags: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, dict[str, str]] = field(default_factory=dict)

    def plus(self, other: Variant) -> Variant:
        """Both variants' settings; for a flag both set, `other`'s value."""
        flags = {}
        for name in {*self.flags, *other.flags}:
            mine, theirs = self.flags.get(name, []), other.flags.get(name, [])
            named = {f.split("=", 1)[0] for f in theirs}
            flags[name] = [f for f in mine if f.split("=", 1)[0] not in named] + theirs
        env = {
            name: {**self.env.get(name, {}), **other.env.get(name, {})} for name in {*self.env, *other.env}
        }
        return Variant(f"{self.about}; {other.about}", flags, env)


VARIANTS: dict[str, Variant] = {
    "baseline": Variant("today's flags"),
    "before-tuning": Variant(
        "the defaults before issue 11's tuning",
        {APISERVER: ["--watch-cache=true", "--event-ttl=1h"], CONTROLLER_MANAGER: ["--controllers=*"]},
        {p: {"GOGC": "100"} for p in GO_COMPONENTS},
    ),
    "no-watch-cache": Variant("API server without its watch cache", {APISERVER: ["--watch-cache=false"]}),
    "event-ttl-5m": Variant("events kept 5 min, not 1 h", {APISERVER: ["--event-ttl=5m"]}),
    "no-event-cache": Variant(
        "no watch cache for events only", {APISERVER: ["--watch-cache-sizes=events#0"]}
    ),
    "no-cache-snapshots": Variant(
        "no list snapshots of the watch cache",
        {APISERVER: ["--feature-gates=ListFromCacheSnapshot=false"]},
    ),
    "gogc50": Variant("GOGC=50 for the Go control plane", env={p: {"GOGC": "50"} for p in GO_COMPONENTS}),
    "gogc75": Variant("GOGC=75 for the Go control plane", env={p: {"GOGC": "75"} for p in GO_COMPONENTS}),
    "gomemlimit": Variant(
        "GOMEMLIMIT (soft) per process, GOGC default",
        env={
            "kube-apiserver": {"GOMEMLIMIT": "600MiB"},
            "kube-controller-manager": {"GOMEMLIMIT": "300MiB"},
            "etcd": {"GOMEMLIMIT": "200MiB"},
            "kube-scheduler": {"GOMEMLIMIT": "150MiB"},
        },
    ),
    "controllers": Variant(
        "only the controllers customer instances need",
        {CONTROLLER_MANAGER: ["--controllers=*," + ",".join(f"-{c}" for c in UNNEEDED_CONTROLLERS)]},
    ),
    "etcd-snapshot-5k": Variant(
        "etcd keeps 5,000 raft entries, not 10,000", {"etcd": ["--snapshot-count=5000"]}
    ),
}


def variant(spec: str) -> Variant:
    """A named variant, or several joined by '+' (later ones win where they set the same flag)."""
    parts = spec.split("+")
    unknown = [p for p in parts if p not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {', '.join(unknown)} (see --list)")
    combined = VARIANTS[parts[0]]
    for p in parts[1:]:
        combined = combined.plus(VARIANTS[p])
    return combined


# -- the template: one customer's objects, rendered from the real program --------------------------
def render_templates(folder: Path) -> dict[str, list[dict]]:
    """One instance per plan, rendered by the real program without a cluster; cached in `folder`."""
    cache = folder / "templates.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import pulumi_kubernetes as k8s

    import program
    from automation.provision import SOURCE_TENANTS_FILE, write_stack_config
    from automation.reconcile import LicenseSigner
    from automation.workspace import StackSettings, open_stack
    from licensing.keys import generate_private_key_pem
    from tenancy.schema import Tenant

    signer = LicenseSigner(generate_private_key_pem(), "bench-cp")
    templates: dict[str, list[dict]] = {}
    for plan in PLANS:
        root = folder / f"render-{plan}"
        out = root / "manifests"
        settings = StackSettings.in_folder(root, "bench-controlplane", None)
        tenant = Tenant(TEMPLATE_ID, f"ops@{TEMPLATE_ID}.example", f"Bench {TEMPLATE_ID}", plan)
        stack = open_stack(tenant.id, settings)
        write_stack_config(
            stack, tenant, signer.license_for(tenant, None, datetime.now(UTC)), settings, SOURCE_TENANTS_FILE
        )

        def renderer(config, out=out):
            return k8s.Provider("cluster", render_yaml_to_directory=str(out))

        # The program as deployed, with the one provider writing manifests instead of calling a cluster.
        with mock.patch.object(program, "kubernetes_provider", renderer):
            stack.up(program=program.iotistic_program, color="never", on_output=lambda _: None)
        objects = [yaml.safe_load(p.read_text()) for p in sorted(out.rglob("*.yaml"))]
        objects = [o for o in objects if o]
        unknown = {o["kind"] for o in objects} - set(KIND_ORDER)
        if unknown:
            raise SystemExit(f"the instance has kinds this bench does not order: {sorted(unknown)}")
        templates[plan] = sorted(objects, key=lambda o: KIND_ORDER.index(o["kind"]))
    cache.write_text(json.dumps(templates))
    return templates


def pods_per_instance(objects: list[dict]) -> int:
    return sum(o["spec"].get("replicas", 1) for o in objects if o["kind"] in ("Deployment", "StatefulSet"))


# -- a keep-alive client (one connection per thread, as the provider keeps its own) ------------------
class Client:
    """HTTPS + JSON to the API server as the cluster admin, one kept-alive connection per thread."""

    def __init__(self, cluster: LocalCluster, timeout: float = 60.0) -> None:
        self.port = cluster.apiserver_port
        self.ctx = ssl.create_default_context(cafile=str(cluster.pki.crt("ca")))
        self.ctx.load_cert_chain(str(cluster.pki.crt("admin")), str(cluster.pki.key("admin")))
        self.timeout = timeout
        self.local = threading.local()
        self.paths: dict[tuple[str, str], tuple[str, bool]] = {}

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        content_type: str = "application/json",
        tries: int = 8,
    ) -> tuple[int, dict]:
        """(status, decoded answer); retried on connection errors, 429 and 5xx with backoff."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = content_type
        for attempt in range(tries):
            try:
                conn = self._conn()
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self.local.conn = None
                if attempt == tries - 1:
                    raise
                time.sleep(min(5.0, 0.25 * 2**attempt))
                continue
            if (resp.status == 429 or resp.status >= 500) and attempt < tries - 1:
                time.sleep(min(5.0, 0.25 * 2**attempt))
                continue
            try:
                return resp.status, json.loads(raw) if raw else {}
            except ValueError:
                return resp.status, {"text": raw.decode(errors="replace")}
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: object = None, content_type: str = "application/json") -> dict:
        status, answer = self.request(method, path, body, content_type)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {answer.get('message', answer)}")
        return answer

    def discover(self, objects: list[dict]) -> None:
        """The resource name and scope of each (apiVersion, kind) in `objects`, from discovery."""
        for version in {o["apiVersion"] for o in objects}:
            base = "/api/v1" if version == "v1" else f"/apis/{version}"
            for r in self.ok("GET", base)["resources"]:
                if "/" not in r["name"]:
                    self.paths[(version, r["kind"])] = (r["name"], r["namespaced"])

    def apply(self, obj: dict) -> None:
        """Server-side apply, as the kubernetes provider creates and updates objects."""
        query = f"?fieldManager={quote(FIELD_MANAGER)}&force=true"
        self.ok("PATCH", object_path(obj, self.paths) + query, obj, "application/apply-patch+yaml")

    def count(self, path: str) -> int:
        """How many objects a list has, without reading them (limit=1 and remainingItemCount)."""
        sep = "&" if "?" in path else "?"
        answer = self.ok("GET", f"{path}{sep}limit=1")
        remaining = answer["metadata"].get("remainingItemCount")
        if remaining is not None or not answer["metadata"].get("continue"):
            return len(answer["items"]) + (remaining or 0)
        return len(self.ok("GET", path)["items"])  # selectors: no remainingItemCount


# -- /proc ---------------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


class Sampler:
    """Each process's RSS every second in a thread: the peak of each, and of their sum."""

    def __init__(self, pids: dict[str, int], every: float = 1.0) -> None:
        self.pids = pids
        self.every = every
        self.peak = dict.fromkeys(pids, 0)
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = {name: rss_kib(pid) for name, pid in self.pids.items()}
            self.peak = {name: max(self.peak[name], kib) for name, kib in now.items()}
            self.peak_total = max(self.peak_total, sum(now.values()))
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cpu_rate(pids: dict[str, int], window: float) -> float:
    """Cores the processes used together over the next `window` seconds."""
    before = sum(cpu_seconds(p) for p in pids.values())
    time.sleep(window)
    return (sum(cpu_seconds(p) for p in pids.values()) - before) / window


# -- one variant ---------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    customers: int
    nodes: int
    idle_kib: dict[str, int]
    after_kib: dict[str, int]
    peak_kib: dict[str, int]
    peak_total_kib: int
    cpu: dict[str, float]
    idle_cores: float
    apply_s: float
    catch_up_s: float
    wall_s: float
    caught_up: bool
    checks: dict[str, str]
    client_cpu: float

    def growth(self, name: str) -> int:
        return self.after_kib[name] - self.idle_kib[name]

    @property
    def total_growth(self) -> int:
        return sum(self.growth(n) for n in self.after_kib)

    @property
    def total_cpu(self) -> float:
        return sum(self.cpu.values())


def customer_objects(templates: dict[str, str], i: int) -> list[dict]:
    return json.loads(templates[PLANS[i % len(PLANS)]].replace(TEMPLATE_ID, f"c{i:04d}"))


def load(
    client: Client, templates: dict[str, str], n: int, threads: int, progress: Callable[[int], None]
) -> None:
    """Apply n customers' objects, each customer's in order, `threads` customers at a time."""

    def one(i: int) -> None:
        for obj in customer_objects(templates, i):
            client.apply(obj)

    done = 0
    pool = ThreadPoolExecutor(threads)
    try:
        for future in as_completed([pool.submit(one, i) for i in range(n)]):
            future.result()
            done += 1
            progress(done)
    finally:  # on a failure or Ctrl-C, the customers not started yet are not applied
        pool.shutdown(cancel_futures=True)


def caught_up(client: Client, expected_pods: int) -> bool:
    """Every expected pod exists and runs (so its volumes are bound and its quota was counted)."""
    if client.count("/api/v1/pods") < expected_pods:
        return False
    pending = client.ok("GET", "/api/v1/pods?limit=1&fieldSelector=" + quote("status.phase!=Running"))
    return not pending["items"]


def wait_for(check: Callable[[], bool], timeout: float, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def behaviour_checks(client: Client) -> dict[str, str]:
    """What customer instances rely on the controllers for, on the loaded cluster: 'ok' or why not."""
    checks: dict[str, str] = {}
    ns = "bench-check"
    client.ok(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    for what, path in (
        ("default ServiceAccount", f"/api/v1/namespaces/{ns}/serviceaccounts/default"),
        ("kube-root-ca.crt", f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"),
    ):
        ok = wait_for(lambda path=path: client.request("GET", path)[0] == 200, 60)
        checks[what] = "ok" if ok else "missing after 60 s"
    c = "customer-c0000"
    quotas = client.ok("GET", f"/api/v1/namespaces/{c}/resourcequotas")["items"]
    checks["quota status"] = (
        "ok" if quotas and all(q.get("status", {}).get("used") for q in quotas) else "empty"
    )
    slices = client.ok("GET", f"/apis/discovery.k8s.io/v1/namespaces/{c}/endpointslices")["items"]
    ready = {s["metadata"]["labels"].get("kubernetes.io/service-name") for s in slices if s.get("endpoints")}
    services = {s["metadata"]["name"] for s in client.ok("GET", f"/api/v1/namespaces/{c}/services")["items"]}
    checks["EndpointSlices"] = "ok" if services <= ready else f"none for {sorted(services - ready)}"
    endpoints = client.ok("GET", f"/api/v1/namespaces/{c}/endpoints")["items"]
    checks["Endpoints"] = "ok" if len(endpoints) >= len(services) else f"{len(endpoints)} of {len(services)}"
    pvcs = client.ok("GET", f"/api/v1/namespaces/{c}/persistentvolumeclaims")["items"]
    bound = [p for p in pvcs if p.get("status", {}).get("phase") == "Bound"]
    checks["PVCs bound"] = "ok" if pvcs and len(bound) == len(pvcs) else f"{len(bound)} of {len(pvcs)}"
    client.ok("DELETE", f"/api/v1/namespaces/{c}")
    gone = wait_for(lambda: client.request("GET", f"/api/v1/namespaces/{c}")[0] == 404, 180)
    checks["namespace deleted"] = "ok" if gone else "still there after 180 s"
    if gone:
        pvs = client.ok("GET", "/api/v1/persistentvolumes")["items"]
        left = [p for p in pvs if p["spec"].get("claimRef", {}).get("namespace") == c]
        checks["its volumes released"] = "ok" if not left else f"{len(left)} PVs still claimed"
    return checks


def run_variant(name: str, n: int, templates: dict[str, list[dict]], threads: int, work: Path) -> Result:
    began = time.monotonic()
    spec = variant(name)
    folder = work / f"v{len(list(work.glob('v*')))}"
    cluster = LocalCluster.on_free_ports(folder / "cluster").sized_for(n).with_tuning(spec.flags, spec.env)
    print(f"==> {name}: {spec.about}; {n} customers, {cluster.nodes} simulated nodes", flush=True)
    for comp, extra in spec.flags.items():
        print(f"    {comp}: {' '.join(extra)}", flush=True)
    for comp, env in spec.env.items():
        print(f"    {comp}: {' '.join(f'{k}={v}' for k, v in env.items())}", flush=True)
    cluster.start(control_plane_only=True)
    try:
        pids = {c: pid for c, pid in cluster.pids().items() if pid}
        client = Client(cluster)
        texts = {plan: json.dumps(objs) for plan, objs in templates.items()}
        client.discover([o for objs in templates.values() for o in objs])
        expected = sum(pods_per_instance(templates[PLANS[i % len(PLANS)]]) for i in range(n))
        idle_cores = cpu_rate(pids, IDLE_WINDOW)
        idle = {c: rss_kib(p) for c, p in pids.items()}
        cpu0 = {c: cpu_seconds(p) for c, p in pids.items()}
        me0 = os.times()
        started = time.monotonic()
        step = max(1, n // 10)

        def progress(done: int) -> None:
            if done % step == 0 or done == n:
                elapsed = time.monotonic() - started
                print(f"    applied {done}/{n} customers in {elapsed:.0f} s", flush=True)

        with Sampler(pids) as sampler:
            load(client, texts, n, threads, progress)
            apply_s = time.monotonic() - started
            ok = wait_for(lambda: caught_up(client, expected), CATCH_UP_TIMEOUT, every=2.0)
            print(
                f"    {expected} pods running {time.monotonic() - started:.0f} s after the start", flush=True
            )
            # Then quiet: the controllers' and kwok's follow-ups (endpoints, quota, status) are done.
            wait_for(lambda: cpu_rate(pids, QUIET_WINDOW) < idle_cores + QUIET_MARGIN_CORES, 300, every=0)
            catch_up_s = time.monotonic() - started - apply_s
            after = {c: rss_kib(p) for c, p in pids.items()}
            cpu = {c: cpu_seconds(p) - cpu0[c] for c, p in pids.items()}
        me1 = os.times()
        print(f"    caught up {catch_up_s:.0f} s after the last apply; checking behaviour", flush=True)
        checks = behaviour_checks(client)
        return Result(
            name,
            n,
            cluster.nodes,
            idle,
            after,
            sampler.peak,
            sampler.peak_total,
            cpu,
            idle_cores,
            apply_s,
            catch_up_s,
            time.monotonic() - began,
            ok,
            checks,
            (me1.user + me1.system) - (me0.user + me0.system),
        )
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


# -- report --------------------------------------------------------------------------------------
def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f}"


def print_variant(r: Result) -> None:
    print(
        f"\n== {r.name}: {r.customers} customers on {r.nodes} nodes; applied in {r.apply_s:.0f} s, caught up "
        f"{r.catch_up_s:.0f} s later{'' if r.caught_up else ' (NOT all pods running)'}; variant took "
        f"{r.wall_s / 60:.1f} min"
    )
    print(
        f"{'process':<24} {'idle MiB':>9} {'after MiB':>10} {'growth':>8} {'MiB/cust':>9} {'peak MiB':>9} "
        f"{'CPU s':>7}"
    )
    for c in r.after_kib:
        print(
            f"{c:<24} {mib(r.idle_kib[c]):>9} {mib(r.after_kib[c]):>10} {mib(r.growth(c)):>8} "
            f"{r.growth(c) / 1024 / r.customers:>9.3f} {mib(r.peak_kib[c]):>9} {r.cpu[c]:>7.0f}"
        )
    print(
        f"{'total':<24} {mib(sum(r.idle_kib.values())):>9} {mib(sum(r.after_kib.values())):>10} "
        f"{mib(r.total_growth):>8} {r.total_growth / 1024 / r.customers:>9.3f} {mib(r.peak_total_kib):>9} "
        f"{r.total_cpu:>7.0f}"
    )
    print(f"(bench client CPU {r.client_cpu:.0f} s; idle control plane {r.idle_cores:.2f} cores)")
    bad = {k: v for k, v in r.checks.items() if v != "ok"}
    print("checks: " + ("all ok (" + ", ".join(r.checks) + ")" if not bad else f"FAILED {bad}"))


def print_comparison(results: list[Result]) -> None:
    base = results[0]
    short = {
        "etcd": "etcd",
        "kube-apiserver": "apiserver",
        "kube-controller-manager": "ctrl-mgr",
        "kube-scheduler": "scheduler",
        "kwok": "kwok",
    }
    print(f"\n== growth (MiB) and CPU seconds against {base.name}, {base.customers} customers each")
    head = " ".join(f"{short[c]:>9}" for c in COMPONENTS)
    width = max(34, *(len(r.name) for r in results))
    print(
        f"{'variant':<{width}} {head} {'total':>7} {'vs base':>8} {'peak':>6} {'CPU s':>6} {'vs base':>8} "
        f"{'checks':>7}"
    )
    for r in results:
        cols = " ".join(f"{mib(r.growth(c)):>9}" for c in COMPONENTS)
        d_mem = (r.total_growth - base.total_growth) / 1024
        d_cpu = r.total_cpu / base.total_cpu - 1 if base.total_cpu else 0.0
        checks = "ok" if all(v == "ok" for v in r.checks.values()) else "FAILED"
        print(
            f"{r.name:<{width}} {cols} {mib(r.total_growth):>7} {d_mem:>+8.0f} {mib(r.peak_total_kib):>6} "
            f"{r.total_cpu:>6.0f} {d_cpu:>+8.0%} {checks:>7}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1000, help="customer instances (default 1000)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="a variant from --list, or several joined by '+'; repeatable (default: baseline)",
    )
    parser.add_argument("--threads", type=int, default=8, help="customers applied at a time (default 8)")
    parser.add_argument("--list", action="store_true", help="print the variants and their flags, then exit")
    args = parser.parse_args()
    if args.list:
        for name, v in VARIANTS.items():
            settings = [f"{c}: {' '.join(f)}" for c, f in v.flags.items()]
            settings += [f"{c}: {' '.join(f'{k}={x}' for k, x in e.items())}" for c, e in v.env.items()]
            print(f"{name:<20} {v.about}" + "".join(f"\n{'':<22}{s}" for s in settings))
        return 0
    names = list(dict.fromkeys(args.variant or ["baseline"]))
    if names[0] != "baseline":
        names = ["baseline", *[n for n in names if n != "baseline"]]
    for name in names:
        try:
            variant(name)
        except ValueError as e:
            parser.error(str(e))
    if args.customers < 1 or args.threads < 1:
        parser.error("--customers and --threads must be at least 1")
    work = ROOT / ".data" / f"bench-controlplane-{secrets.token_hex(3)}"
    work.mkdir(parents=True)
    results: list[Result] = []
    try:
        began = time.monotonic()
        templates = render_templates(work)
        objects = {plan: len(objs) for plan, objs in templates.items()}
        print(
            f"{os.cpu_count()} CPUs; one instance rendered from program.py in "
            f"{time.monotonic() - began:.0f} s: "
            f"{objects} objects per plan, {pods_per_instance(templates[PLANS[0]])} pods; variants {names}",
            flush=True,
        )
        for name in names:
            result = run_variant(name, args.customers, templates, args.threads, work)
            results.append(result)
            print_variant(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        for r in results:
            print_variant(r)
        print_comparison(results)
    return 0 if all(r.caught_up and all(v == "ok" for v in r.checks.values()) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
