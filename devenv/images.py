"""Container images for the real node, built here from Debian packages and the pinned Python
requirements, with no Docker and no registry, then imported into the node's containerd.

toolchain/images/images.yaml lists the images; each one is a Dockerfile (the same file users
build with Docker). Its FROM names a Debian root filesystem made with mmdebstrap (`bases:` in the
catalog); its instructions are carried out as `docker build` would: RUN through /bin/sh in a chroot
of the image (host network, private /proc and /dev, nothing mounted outside a private mount
namespace; the host's resolv.conf and CA bundle are mounted for the command's downloads and are
not part of the layer), COPY from the build context, the rest into the image config. A multi-stage
Dockerfile's last stage is the image; an earlier stage is not built here but read from the folder
the catalog gives for it (`stages:`): the billing image's `engine` stage compiles the Pulumi engine
with toolchain/build-engine.sh, and its files are the ones the same script put in $IOTISTIC_CACHE.
Each RUN and COPY is one layer, cached under a hash of everything it depends on (the base, the
instructions before it, the files it copies), like Docker's build cache: unchanged inputs build in
about a second, a change in tenant_app/ rebuilds only that COPY layer. umoci keeps the layers in
one OCI layout under $IOTISTIC_CACHE/images, shared by every checkout (tags are content hashes, never names).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devenv import dockerfile as df
from devenv.service_user import ServiceError, tail

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "toolchain" / "images" / "images.yaml"
# Part of every cache key: bump it when the way a layer is made changes.
BUILDER_VERSION = "1"
PLATFORM = {"architecture": "amd64", "os": "linux"}
# Never copied into an image (what .gitignore already keeps out of the repository).
IGNORED = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
IGNORED_SUFFIXES = (".pyc", ".pyo")
HEARTBEAT = 30.0
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "umoci": "umoci",
    "unshare": "util-linux",
    "chroot": "coreutils",
}


def cache_dir() -> Path:
    return Path(os.environ.get("IOTISTIC_CACHE", ROOT / ".cache"))


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


class ImageBuildError(ServiceError):
    """An image could not be built; the message names the image, the step and the log's tail."""


# --- the catalog ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Base:
    """What a FROM means here: a minbase Debian root filesystem with these packages."""

    name: str
    packages: tuple[str, ...] = ()
    unmanaged_python: bool = False

    def key(self, suite: str) -> str:
        return digest("base", BUILDER_VERSION, suite, self.name, *self.packages, str(self.unmanaged_python))


@dataclass(frozen=True)
class StageFolder:
    """Where the files of an earlier build stage are: `path` of stage `stage` is folder `host`."""

    stage: str
    path: str  # absolute, inside the stage
    host: Path


@dataclass(frozen=True)
class ImageSpec:
    """One image of the catalog: the name pods use, its Dockerfile and build context."""

    ref: str
    dockerfile: Path
    context: Path
    optional: bool = False
    stages: tuple[StageFolder, ...] = ()

    def stage_file(self, stage: str, path: str) -> Path:
        """The host file standing for `path` of an earlier stage (the longest mapped prefix wins)."""
        folders = [f for f in self.stages if f.stage == stage]
        if not folders:
            raise df.DockerfileError(
                f"COPY --from={stage}: no stage {stage!r} is built here; "
                f"the catalog's `stages:` for {self.ref} names none"
            )
        for folder in sorted(folders, key=lambda f: len(f.path), reverse=True):
            prefix = folder.path.rstrip("/")
            if path == prefix or path.startswith(prefix + "/"):
                return folder.host / path[len(prefix) :].lstrip("/")
        mapped = ", ".join(f.path for f in folders)
        raise df.DockerfileError(f"COPY --from={stage} {path}: outside what the catalog maps ({mapped})")

    @property
    def short(self) -> str:
        """The name without registry and tag, for progress lines: iotistic/api, postgres."""
        return self.ref.split("/", 1)[-1].rsplit(":", 1)[0]


@dataclass(frozen=True)
class Catalog:
    suite: str
    bases: dict[str, Base]
    images: tuple[ImageSpec, ...]

    def wanted(self) -> list[ImageSpec]:
        """Every image to build: optional ones only when their Dockerfile exists."""
        return [i for i in self.images if not i.optional or i.dockerfile.exists()]


def load_catalog(path: Path = CATALOG, bin_dir: Path | None = None) -> Catalog:
    """Read images.yaml; `$IOTISTIC_BIN` / `$IOTISTIC_CACHE` in a folder mean the built programs'
    folder / the cache (both of this machine's set-up), anything else is relative to the repository."""
    data = yaml.safe_load(path.read_text())
    bin_dir = bin_dir or cache_dir() / "bin"
    bases = {
        name: Base(name, tuple(spec.get("packages") or ()), bool(spec.get("unmanaged_python")))
        for name, spec in data["bases"].items()
    }
    places = {"$IOTISTIC_BIN": bin_dir, "$IOTISTIC_CACHE": cache_dir()}

    def place(value: str) -> Path:
        return places.get(value, ROOT / value)

    def stage_folders(entry: dict) -> tuple[StageFolder, ...]:
        return tuple(
            StageFolder(stage, inner, place(host))
            for stage, mapping in (entry.get("stages") or {}).items()
            for inner, host in mapping.items()
        )

    images = tuple(
        ImageSpec(
            ref=entry["ref"],
            dockerfile=ROOT / entry["dockerfile"],
            context=place(entry.get("context", ".")),
            optional=bool(entry.get("optional")),
            stages=stage_folders(entry),
        )
        for entry in data["images"]
    )
    return Catalog(data["suite"], bases, images)


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


# --- the Debian mirror the host already uses -----------------------------------------------------
def debian_sources(suite: str, apt_dir: Path = Path("/etc/apt")) -> list[str]:
    """One-line apt sources for `suite`, -updates and -security, from the host's own apt config.

    Only the Debian archive's suites are kept (third-party repositories name other suites), so the
    images come from the mirror this machine is configured for, whatever it is.
    """
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    lines: list[str] = []
    files = sorted(apt_dir.glob("sources.list.d/*.sources")) + sorted(apt_dir.glob("sources.list.d/*.list"))
    files.insert(0, apt_dir / "sources.list")
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for raw in stanza.splitlines():
                    if raw.startswith("#") or ":" not in raw:
                        continue
                    key, _, value = raw.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                for uri in fields.get("uris", "").split():
                    for s in fields.get("suites", "").split():
                        if s in wanted:
                            lines.append(f"deb {uri} {s} {fields.get('components', 'main')}")
        else:
            for raw in text.splitlines():
                parts = raw.split("#", 1)[0].split()
                if (
                    len(parts) >= 4
                    and parts[0] == "deb"
                    and not parts[1].startswith("[")
                    and parts[2] in wanted
                ):
                    lines.append(" ".join(parts))
    return list(dict.fromkeys(lines))


# --- running the tools ---------------------------------------------------------------------------
def run_logged(what: str, argv: list[str], log_file: Path, stdin: str | None = None) -> None:
    """Run argv (fed `stdin`) with its output in log_file; a line every 30 s; ImageBuildError
    with the log's tail when it fails."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with open(log_file, "ab") as out:
        out.write(f"\n--- {time.strftime('%H:%M:%S')} {what}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            text=stdin is not None,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        next_beat = began + HEARTBEAT
        while proc.poll() is None:
            time.sleep(0.2)
            if time.monotonic() > next_beat:
                log(f"  ... {what} still running ({time.monotonic() - began:.0f} s)")
                next_beat += HEARTBEAT
    if proc.returncode != 0:
        raise ImageBuildError(
            f"{what} failed (exit {proc.returncode}). Last lines of {log_file}:\n{tail(log_file, 30)}"
        )


def check_prerequisites() -> None:
    """Root and the Debian tools: a clear error naming what is missing."""
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the node images needs root (mmdebstrap and umoci keep file ownership): "
            "run as root, e.g. `sudo scripts/setup`"
        )
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise ImageBuildError(f"missing Debian packages: {' '.join(missing)} (scripts/setup installs them)")


# --- the OCI layout ------------------------------------------------------------------------------
@dataclass
class Layout:
    """An OCI image layout managed with umoci; tags are content hashes."""

    dir: Path

    def init(self) -> None:
        if not (self.dir / "index.json").exists():
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["umoci", "init", "--layout", str(self.dir)], check=True)

    def index(self) -> dict:
        return json.loads((self.dir / "index.json").read_text())

    def manifest_descriptor(self, tag: str) -> dict | None:
        for m in self.index().get("manifests") or []:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m
        return None

    def has(self, tag: str) -> bool:
        return self.manifest_descriptor(tag) is not None

    def image(self, tag: str) -> str:
        return f"{self.dir}:{tag}"

    def blob(self, digest_: str) -> Path:
        algo, hex_ = digest_.split(":", 1)
        return self.dir / "blobs" / algo / hex_

    def manifest(self, tag: str) -> dict:
        desc = self.manifest_descriptor(tag)
        if desc is None:
            raise KeyError(tag)
        return json.loads(self.blob(desc["digest"]).read_text())

    def size(self, tag: str) -> int:
        """Compressed size of the image's layers and config (what an import moves)."""
        m = self.manifest(tag)
        return m["config"]["size"] + sum(layer["size"] for layer in m["layers"])


# --- building ------------------------------------------------------------------------------------
@dataclass
class BuildResult:
    """The layout tag of each image, and what was rebuilt."""

    tags: dict[str, str] = field(default_factory=dict)
    built_steps: int = 0
    cached_steps: int = 0
    seconds: float = 0.0


class ImageBuilder:
    """Builds the catalog's images into the layout, one step (layer) at a time, with a cache."""

    def __init__(self, catalog: Catalog | None = None, root: Path | None = None) -> None:
        self.catalog = catalog or load_catalog()
        self.root = root or cache_dir() / "images"
        self.layout = Layout(self.root / "oci")
        self.logs = self.root / "logs"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One build at a time per layout (checkouts share it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def build(self, only: list[str] | None = None) -> BuildResult:
        """Build every wanted image (or those whose ref or short name is in `only`)."""
        check_prerequisites()
        began = time.monotonic()
        result = BuildResult()
        specs = self.catalog.wanted()
        if only:
            specs = [s for s in specs if s.ref in only or s.short in only]
            unknown = set(only) - {s.ref for s in specs} - {s.short for s in specs}
            if unknown:
                raise ImageBuildError(f"no image named {', '.join(sorted(unknown))} in {CATALOG}")
        with self._lock():
            self.layout.init()
            for spec in specs:
                result.tags[spec.ref] = self._build_image(spec, result)
        result.seconds = time.monotonic() - began
        return result

    # -- one image --------------------------------------------------------------------------------
    def _build_image(self, spec: ImageSpec, result: BuildResult) -> str:
        if not spec.dockerfile.exists():
            raise ImageBuildError(f"{spec.ref}: {spec.dockerfile} does not exist")
        rel = spec.dockerfile.relative_to(ROOT) if spec.dockerfile.is_relative_to(ROOT) else spec.dockerfile
        try:
            leading, stages = df.stages(df.parse(spec.dockerfile.read_text(), str(rel)), str(rel))
        except df.DockerfileError as e:
            raise ImageBuildError(str(e)) from None
        given = {f.stage for f in spec.stages}
        for stage in stages[:-1]:
            if stage.name not in given:
                raise ImageBuildError(
                    f"{rel}:{stage.line}: the build stage {stage.name or '(unnamed)'!r} (FROM {stage.base}) "
                    f"is not built here; name the folder that holds its files in {CATALOG.name}'s "
                    f"`stages:` for {spec.ref}"
                )
        final = stages[-1]
        step = _Steps(self, spec, str(rel), result)
        for ins in [*leading, df.Instruction("FROM", final.base, final.line), *final.instructions]:
            try:
                step.apply(ins)
            except df.DockerfileError as e:
                raise ImageBuildError(f"{rel}:{ins.line}: {e}") from None
        return step.finish()

    # -- bases ------------------------------------------------------------------------------------
    def base_tag(self, name: str, result: BuildResult) -> tuple[str, str]:
        """The layout tag of base `name` (built with mmdebstrap if missing) and its cache key."""
        if name == "scratch":
            key = digest("scratch", BUILDER_VERSION)
            tag = f"base-{key}"
            if not self.layout.has(tag):
                subprocess.run(["umoci", "new", "--image", self.layout.image(tag)], check=True)
            return tag, key
        base = self.catalog.bases.get(name)
        if base is None:
            raise df.DockerfileError(
                f"FROM {name}: no such base in {CATALOG.relative_to(ROOT)} "
                f"(bases: {', '.join(self.catalog.bases)}, scratch)"
            )
        key = base.key(self.catalog.suite)
        tag = f"base-{key}"
        if self.layout.has(tag):
            result.cached_steps += 1
            return tag, key
        sources = debian_sources(self.catalog.suite)
        if not sources:
            raise ImageBuildError(
                f"no Debian apt source for {self.catalog.suite} is configured on this machine "
                "(/etc/apt/sources.list*): the images are built from the host's Debian mirror"
            )
        log(f"FROM {name}: building a Debian {self.catalog.suite} root filesystem with mmdebstrap (~1 min)")
        hooks = [
            # What Debian's docker images do: no service starts while packages are installed.
            'printf "#!/bin/sh\\nexit 101\\n" >"$1/usr/sbin/policy-rc.d"',
            'chmod 755 "$1/usr/sbin/policy-rc.d"',
            'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log',
        ]
        if base.unmanaged_python:
            # Like the python:*-slim images: pip installs into /usr/local, which Debian leaves to us.
            hooks.append('rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED')
        with tempfile.TemporaryDirectory(dir=self.root, prefix="base-") as tmp:
            rootfs_tar = Path(tmp) / "rootfs.tar"
            argv = [
                "mmdebstrap",
                "--mode=root",
                "--variant=minbase",
                "--format=tar",
                '--aptopt=APT::Install-Recommends "false"',
                # Documentation and translations are of no use in an image (kept: copyrights).
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--dpkgopt=path-exclude=/usr/share/info/*",
            ]
            if base.packages:
                argv.append(f"--include={','.join(base.packages)}")
            argv += [f"--customize-hook={h}" for h in hooks]
            argv += [self.catalog.suite, str(rootfs_tar), "-"]
            log_file = self.logs / f"base-{key}.log"
            run_logged(f"mmdebstrap for FROM {name}", argv, log_file, stdin="\n".join(sources) + "\n")
            subprocess.run(["umoci", "new", "--image", self.layout.image(tag)], check=True)
            run_logged(
                f"adding the {name} root filesystem",
                ["umoci", "raw", "add-layer", "--image", self.layout.image(tag), str(rootfs_tar)],
                log_file,
            )
        result.built_steps += 1
        return tag, key

    # -- export ----------------------------------------------------------------------------------
    def write_archive(self, tags: dict[str, str], out: io.BufferedIOBase) -> None:
        """An OCI archive holding `tags` (ref -> layout tag), each named by its ref for containerd."""
        manifests = []
        blobs: dict[str, None] = {}
        for ref, tag in tags.items():
            desc = dict(self.layout.manifest_descriptor(tag) or {})
            if not desc:
                raise KeyError(tag)
            manifest = self.layout.manifest(tag)
            blobs[desc["digest"]] = None
            blobs[manifest["config"]["digest"]] = None
            for layer in manifest["layers"]:
                blobs[layer["digest"]] = None
            desc["annotations"] = {
                "io.containerd.image.name": ref,
                "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
            }
            desc["platform"] = PLATFORM
            manifests.append(desc)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }
        with tarfile.open(fileobj=out, mode="w|") as tar:

            def add_bytes(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))

            add_bytes("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            add_bytes("index.json", json.dumps(index).encode())
            for d in blobs:
                algo, hex_ = d.split(":", 1)
                tar.add(self.layout.blob(d), arcname=f"blobs/{algo}/{hex_}")

    def manifest_digest(self, tag: str) -> str:
        desc = self.layout.manifest_descriptor(tag)
        if desc is None:
            raise KeyError(tag)
        return desc["digest"]


class _Steps:
    """The state of one Dockerfile build: the cache key so far, the config, the bundle if any."""

    def __init__(self, builder: ImageBuilder, spec: ImageSpec, path: str, result: BuildResult) -> None:
        self.b, self.spec, self.path, self.result = builder, spec, path, result
        self.key = ""
        self.tag = ""
        self.base_name = ""
        self.config = df.ImageConfig()
        self.args: dict[str, str] = {}
        self.bundle: Path | None = None
        self.work: tempfile.TemporaryDirectory | None = None
        # Consecutive COPYs not in the cache, from one origin (the build context, or one earlier
        # stage), applied together and packed as one layer: packing scans the whole root
        # filesystem (~10 s per layer in the billing image). Origins stay apart so a change in the
        # context never packs the engine's files again.
        self.pending: list[tuple[str, int, Callable[[Path], None], str]] = []
        self.pending_origin = ""

    @property
    def variables(self) -> dict[str, str]:
        return {**self.args, **self.config.env}

    def apply(self, ins: df.Instruction) -> None:
        kw, args = ins.keyword, ins.args
        if kw == "ARG":
            for k, v in df.key_values(args, self.variables) if "=" in args else [(args.strip(), "")]:
                self.args.setdefault(k, v)
            return
        if kw == "FROM":
            self.base_name = df.substitute(args.split()[0], self.args)
            self.tag, self.key = self.b.base_tag(self.base_name, self.result)
            if self.base_name != "scratch":
                self.config.env["PATH"] = df.DEFAULT_PATH
                if self.b.catalog.bases[self.base_name].unmanaged_python:
                    self.config.env["LANG"] = "C.UTF-8"
            return
        self.key = digest(self.key, kw, args, self.config.as_json())
        if kw == "ENV":
            self.config.env.update(df.key_values(args, self.variables))
        elif kw == "LABEL":
            self.config.labels.update(df.key_values(args, self.variables))
        elif kw == "WORKDIR":
            path = df.substitute(args, self.variables)
            self.config.workdir = path if path.startswith("/") else str(Path(self.config.workdir) / path)
        elif kw == "USER":
            self.config.user = df.substitute(args, self.variables)
        elif kw == "EXPOSE":
            self.config.exposed += df.exposed_ports(df.substitute(args, self.variables))
        elif kw == "CMD":
            self.config.cmd = df.command_form(args)
        elif kw == "ENTRYPOINT":
            self.config.entrypoint = df.command_form(args)
        elif kw == "STOPSIGNAL":
            self.config.stopsignal = args
        elif kw == "COPY":
            copy = df.parse_copy(args, self.variables)
            self.key = digest(self.key, self._sources_digest(copy))
            # Its destination and owner as they are now (a WORKDIR or USER after it must not count).
            dest = copy.dest if copy.dest.startswith("/") else str(Path(self.config.workdir) / copy.dest)
            dest += "/" if copy.dest.endswith("/") and not dest.endswith("/") else ""  # `./` is a folder
            copy = dataclasses.replace(copy, dest=dest)
            self._copy_layer(f"COPY {args}", ins.line, lambda rootfs: self._copy(rootfs, copy), copy.stage)
        elif kw == "RUN":
            self._flush()
            if self.base_name == "scratch":
                raise df.DockerfileError("RUN in an image FROM scratch: there is no shell to run it")
            argv = df.command_form(args)
            self._layer(
                f"RUN {args[:60]}{'...' if len(args) > 60 else ''}",
                ins.line,
                lambda r: self._run(r, argv, ins),
            )

    # -- layers -----------------------------------------------------------------------------------
    def _copy_layer(self, what: str, line: int, change: Callable[[Path], None], origin: str) -> None:
        """A COPY: cached, or kept for the next layer packed (a RUN's, another origin's, the end's)."""
        if self.pending and origin != self.pending_origin:
            self._flush()
        self.pending_origin = origin
        tag = f"step-{self.key}"
        if self.b.layout.has(tag):
            # Keys chain, so this layer already holds any COPY still pending before it.
            self.result.cached_steps += len(self.pending) + 1
            self.pending = []
            self.tag = tag
            return
        self.pending.append((what, line, change, self.key))

    def _flush(self) -> None:
        """Apply the pending COPYs and pack them as one layer, tagged with the last one's key."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []

        def apply_all(rootfs: Path) -> None:
            for what, line, change, _ in pending:
                log(f"{self.spec.short}: {what}")
                try:
                    change(rootfs)
                except (ImageBuildError, df.DockerfileError) as e:
                    raise ImageBuildError(f"{self.path}:{line}: {self.spec.short}: {what}: {e}") from None

        first_line, last_key = pending[0][1], pending[-1][3]
        self._layer(f"{len(pending)} COPY step(s) as one layer", first_line, apply_all, last_key)
        self.result.built_steps += len(pending) - 1

    def _layer(self, what: str, line: int, change: Callable[[Path], None], key: str = "") -> None:
        tag = f"step-{key or self.key}"
        label = f"{self.spec.short}: {what}"
        if self.b.layout.has(tag):
            self.result.cached_steps += 1
            self.tag = tag
            return
        log(f"{label}")
        if self.bundle is None:
            self.work = tempfile.TemporaryDirectory(dir=self.b.root, prefix="bundle-")
            self.bundle = Path(self.work.name) / "bundle"
            run_logged(
                f"{self.spec.short}: unpacking",
                ["umoci", "unpack", "--image", self.b.layout.image(self.tag), str(self.bundle)],
                self._log_file,
            )
        try:
            change(self.bundle / "rootfs")
        except ImageBuildError as e:
            raise ImageBuildError(f"{self.path}:{line}: {label}: {e}") from None
        run_logged(
            f"{self.spec.short}: packing the layer",
            ["umoci", "repack", "--refresh-bundle", "--image", self.b.layout.image(tag), str(self.bundle)],
            self._log_file,
        )
        self.tag = tag
        self.result.built_steps += 1

    @property
    def _log_file(self) -> Path:
        return self.b.logs / f"{self.spec.short.replace('/', '-')}.log"

    def _run(self, rootfs: Path, argv: list[str], ins: df.Instruction) -> None:
        uid, gid = resolve_user(rootfs, self.config.user or "0")
        env = [f"{k}={v}" for k, v in {"HOME": "/root", **self.config.env}.items()]
        workdir = self.config.workdir
        # A private mount namespace: /proc, /dev and resolv.conf are mounted for the command
        # only and vanish with it, so nothing leaks into the host's mounts or into the layer.
        script = (
            'set -e; R="$1"; W="$2"; U="$3"; shift 3\n'
            'mount -t proc proc "$R/proc"\n'
            'mount --rbind /dev "$R/dev"\n'
            'mount --make-rslave "$R/dev"\n'
            "if [ -e /etc/resolv.conf ]; then\n"
            '  [ -e "$R/etc/resolv.conf" ] || { : >"$R/etc/resolv.conf"; touch "$R/.iotistic-resolv"; }\n'
            '  mount --bind /etc/resolv.conf "$R/etc/resolv.conf"\n'
            "fi\n"
            # The CAs this machine trusts (a TLS-intercepting proxy's, say), for downloads only.
            f'if [ -f {HOST_CA_BUNDLE} ] && [ -f "$R{HOST_CA_BUNDLE}" ]; then\n'
            f'  mount --bind {HOST_CA_BUNDLE} "$R{HOST_CA_BUNDLE}"\n'
            "fi\n"
            'mkdir -p "$R$W"\n'
            'exec chroot --userspec="$U" "$R" /usr/bin/env -i "$@"\n'
        )
        cmd = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
            "run",
            str(rootfs),
            workdir,
            f"{uid}:{gid}",
            *env,
            "/bin/sh",
            "-c",
            'cd "$0" && exec "$@"',
            workdir,
            *argv,
        ]
        try:
            run_logged(f"{self.spec.short}: RUN (line {ins.line})", cmd, self._log_file)
        finally:
            marker = rootfs / ".iotistic-resolv"
            if marker.exists():
                marker.unlink()
                (rootfs / "etc" / "resolv.conf").unlink(missing_ok=True)

    def _sources(self, copy: df.Copy) -> list[tuple[Path, str]]:
        """(file, path inside the destination) for every file a COPY takes, in a stable order."""
        out: list[tuple[Path, str]] = []
        for src in copy.sources:
            path = self._source(copy, src)
            if not path.exists():
                where = (
                    f"stage {copy.stage} ({path})" if copy.stage else f"the build context {self.spec.context}"
                )
                raise df.DockerfileError(f"COPY {src}: no such file in {where}")
            if path.is_dir():
                for dirpath, dirnames, filenames in os.walk(path):
                    dirnames[:] = sorted(d for d in dirnames if d not in IGNORED)
                    for name in sorted(filenames):
                        if name.endswith(IGNORED_SUFFIXES):
                            continue
                        f = Path(dirpath) / name
                        out.append((f, str(f.relative_to(path))))
            else:
                out.append((path, path.name))
        return out

    def _source(self, copy: df.Copy, src: str) -> Path:
        """The host path of one COPY source: in the build context, or in an earlier stage's folder."""
        return self.spec.stage_file(copy.stage, src) if copy.stage else self.spec.context / src

    def _sources_digest(self, copy: df.Copy) -> str:
        h = hashlib.sha256()
        for f, rel in self._sources(copy):
            h.update(rel.encode() + b"\0" + oct(f.stat().st_mode & 0o777).encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()

    def _copy(self, rootfs: Path, copy: df.Copy) -> None:
        uid, gid = resolve_user(rootfs, copy.chown) if copy.chown else (0, 0)
        dest = copy.dest
        into_dir = dest.endswith("/") or len(copy.sources) > 1 or self._source(copy, copy.sources[0]).is_dir()
        target = inside(rootfs, dest)
        for src in copy.sources:
            path = self._source(copy, src)
            for f, rel in self._sources(dataclasses.replace(copy, sources=(src,))):
                if path.is_dir():
                    out = target / rel
                elif into_dir or (target.is_dir() and not target.is_symlink()):
                    out = target / f.name
                else:
                    out = target
                make_dirs(out.parent, rootfs, uid, gid)
                shutil.copyfile(f, out)
                os.chmod(out, f.stat().st_mode & 0o777)
                os.chown(out, uid, gid)

    def finish(self) -> str:
        """The image's final tag: its last layer with the Dockerfile's config."""
        try:
            self._flush()
            tag = f"image-{digest(self.key, 'config', self.config.as_json())}"
            if not self.b.layout.has(tag):
                image = self.b.layout.image(tag)
                subprocess.run(["umoci", "tag", "--image", self.b.layout.image(self.tag), tag], check=True)
                clear = [
                    "config.env",
                    "config.cmd",
                    "config.entrypoint",
                    "config.exposedports",
                    "config.labels",
                ]
                subprocess.run(
                    ["umoci", "config", "--image", image, *[f"--clear={c}" for c in clear]],
                    check=True,
                    capture_output=True,
                )
                argv = ["umoci", "config", "--image", image, f"--config.workingdir={self.config.workdir}"]
                argv += [f"--config.env={k}={v}" for k, v in self.config.env.items()]
                argv += [f"--config.user={self.config.user}"] if self.config.user else []
                argv += [f"--config.entrypoint={a}" for a in self.config.entrypoint or []]
                argv += [f"--config.cmd={a}" for a in self.config.cmd or []]
                argv += [f"--config.exposedports={p}" for p in self.config.exposed]
                argv += [f"--config.label={k}={v}" for k, v in self.config.labels.items()]
                argv += [f"--config.stopsignal={self.config.stopsignal}"] if self.config.stopsignal else []
                argv += [f"--config.label=org.opencontainers.image.ref.name={self.spec.ref}"]
                proc = subprocess.run(argv, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise ImageBuildError(f"{self.spec.ref}: umoci config failed: {proc.stderr.strip()}")
                log(f"{self.spec.short}: built ({self.b.layout.size(tag) / 2**20:.0f} MiB compressed)")
            return tag
        finally:
            if self.work is not None:
                self.work.cleanup()


def inside(rootfs: Path, path: str) -> Path:
    """`path` of the image as a host path under rootfs (never escaping it)."""
    parts = [p for p in Path(path).parts if p not in ("/", "", ".")]
    if ".." in parts:
        raise df.DockerfileError(f"path {path!r} leaves the image's root")
    return rootfs.joinpath(*parts)


def make_dirs(path: Path, rootfs: Path, uid: int, gid: int) -> None:
    """mkdir -p inside the image; new folders get mode 755 and the COPY's owner."""
    missing = []
    p = path
    while not p.exists() and p != rootfs:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
        os.chown(d, uid, gid)


def resolve_user(rootfs: Path, user: str) -> tuple[int, int]:
    """USER/--chown `name[:group]` or `uid[:gid]`, looked up in the image's own passwd and group."""
    name, _, group = user.partition(":")

    def lookup(file: str, key: str) -> tuple[int, int] | None:
        try:
            lines = (rootfs / "etc" / file).read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            f = line.split(":")
            if len(f) > 3 and f[0] == key:
                return int(f[2]), int(f[3])
        return None

    if name.isdigit():
        uid = int(name)
        gid = uid
    else:
        found = lookup("passwd", name)
        if found is None:
            raise df.DockerfileError(f"user {name!r} does not exist in the image")
        uid, gid = found
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = lookup("group", group)
            if found is None:
                raise df.DockerfileError(f"group {group!r} does not exist in the image")
            gid = found[0]
    return uid, gid


# --- containerd ----------------------------------------------------------------------------------
def containerd_images(ctr: list[str]) -> dict[str, str]:
    """ref -> manifest digest of what the node's containerd holds (namespace k8s.io)."""
    proc = subprocess.run([*ctr, "-n", "k8s.io", "images", "ls"], capture_output=True, text=True, check=True)
    out = {}
    for line in proc.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            out[parts[0]] = parts[2]
    return out


def import_images(builder: ImageBuilder, tags: dict[str, str], ctr: list[str], log_file: Path) -> list[str]:
    """Import into containerd the images whose digest it does not hold yet; the refs imported."""
    have = containerd_images(ctr)
    todo = {ref: tag for ref, tag in tags.items() if have.get(ref) != builder.manifest_digest(tag)}
    if not todo:
        return []
    log(f"importing into the node's containerd: {', '.join(sorted(todo))}")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [*ctr, "-n", "k8s.io", "images", "import", "-"],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdin is not None
        writer = threading.Thread(target=_write_and_close, args=(builder, todo, proc.stdin))
        writer.start()
        writer.join()
        proc.wait()
    if proc.returncode != 0:
        raise ImageBuildError(f"ctr images import failed. Last lines of {log_file}:\n{tail(log_file, 20)}")
    missing = [
        ref for ref, tag in todo.items() if containerd_images(ctr).get(ref) != builder.manifest_digest(tag)
    ]
    if missing:
        raise ImageBuildError(f"containerd did not take {', '.join(missing)}; see {log_file}")
    return sorted(todo)


def _write_and_close(builder: ImageBuilder, tags: dict[str, str], stream) -> None:
    try:
        builder.write_archive(tags, stream)
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            stream.close()
