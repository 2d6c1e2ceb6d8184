"""The real node's image catalog: one list of images, fed by the same Dockerfiles and pins."""

from __future__ import annotations

import ast
from dataclasses import asdict
from pathlib import Path

import pytest

from components.placement import LOCAL_IMAGES
from devenv import dockerfile as df
from devenv.images import (
    ROOT,
    ImageBuilder,
    ImageBuildError,
    ImageSpec,
    cache_dir,
    debian_sources,
    load_catalog,
)


def test_every_image_of_a_real_customer_is_in_the_catalog():
    refs = {spec.ref for spec in load_catalog().images}
    images = LOCAL_IMAGES
    wanted = {
        images.postgres,
        images.mosquitto,
        images.iotistic("api", images.api_tag),
        images.iotistic("admin", images.dashboard_tag),
        images.iotistic("billing-exporter", images.exporter_tag),
    }
    assert wanted <= refs, f"missing from toolchain/images/images.yaml: {wanted - refs}"
    assert asdict(LOCAL_IMAGES)["registry"] == "iotistic.local"


def test_every_dockerfile_of_the_catalog_parses_and_has_a_known_base():
    catalog = load_catalog()
    for spec in catalog.wanted():
        _, stages = df.stages(df.parse(spec.dockerfile.read_text(), str(spec.dockerfile)))
        base = stages[-1].base
        assert base == "scratch" or base in catalog.bases, f"{spec.dockerfile}: FROM {base}"
        # Every earlier stage is one the catalog says where to read from.
        assert {s.name for s in stages[:-1]} <= {f.stage for f in spec.stages}, spec.ref


def final_stage_copies(spec: ImageSpec) -> list[df.Copy]:
    """The COPY instructions of the stage that becomes the image."""
    _, stages = df.stages(df.parse(spec.dockerfile.read_text()))
    return [df.parse_copy(i.args, {}) for i in stages[-1].instructions if i.keyword == "COPY"]


def project_modules() -> set[str]:
    """The repository's own top-level modules and packages (what an image may need to copy)."""
    return {p.stem for p in ROOT.glob("*.py")} | {p.parent.name for p in ROOT.glob("*/__init__.py")}


def imported_project_modules(path: Path, own: set[str]) -> set[str]:
    """Top-level project modules imported anywhere in `path` (a file or a package)."""
    found: set[str] = set()
    for file in [path] if path.is_file() else path.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found & own


def test_every_image_copies_the_project_modules_its_code_imports():
    """A module its code imports but the Dockerfile leaves out fails only in the image, at run time."""
    own = project_modules()
    for spec in load_catalog().wanted():
        if spec.context != ROOT:
            continue
        copied = {Path(src) for c in final_stage_copies(spec) if not c.stage for src in c.sources}
        modules = {p.stem if p.suffix == ".py" else str(p) for p in copied} & own
        needed: set[str] = set()
        for path in copied:
            if path.suffix == ".py" or (ROOT / path / "__init__.py").exists():
                needed |= imported_project_modules(ROOT / path, own)
        assert needed <= modules, f"{spec.dockerfile.name} ({spec.ref}) does not copy {needed - modules}"


def test_the_billing_image_takes_the_engine_this_machine_built():
    """billing/Dockerfile's `COPY --from=engine` sources are files of the cache's engine build."""
    spec = next(s for s in load_catalog().images if s.ref == "iotistic.local/iotistic/billing:local")
    copies = [c for c in final_stage_copies(spec) if c.stage]
    sources = [spec.stage_file(c.stage, src) for c in copies for src in c.sources]
    names = [p.name for p in sources]
    assert names == ["pulumi", "pulumi-language-python", "pulumi-language-python-exec", "plugins"]
    assert all(p.is_relative_to(cache_dir()) for p in sources)
    # The plugin build copies in bin/ stay out (they would double the image).
    assert not any(p.name.startswith("pulumi-resource-") for p in sources)


def test_a_stage_the_catalog_does_not_map_is_an_error_naming_it(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(
        "FROM debian:bookworm-slim AS tools\nFROM debian:bookworm-slim\nCOPY --from=tools /usr/bin/x /x\n"
    )
    catalog = tmp_path / "images.yaml"
    catalog.write_text(
        "suite: bookworm\nbases: {'debian:bookworm-slim': {packages: []}}\nimages:\n"
        f"  - {{ref: a:1, dockerfile: {tmp_path}/Dockerfile}}\n"
        f"  - {{ref: b:1, dockerfile: {tmp_path}/Dockerfile, stages: {{tools: {{/usr: {tmp_path}}}}}}}\n"
    )
    a, b = load_catalog(catalog).images
    with pytest.raises(df.DockerfileError, match="no stage 'tools' is built here"):
        a.stage_file("tools", "/usr/bin/x")
    assert b.stage_file("tools", "/usr/bin/x") == tmp_path / "bin" / "x"
    with pytest.raises(df.DockerfileError, match="outside what the catalog maps"):
        b.stage_file("tools", "/etc/passwd")
    with pytest.raises(ImageBuildError, match=r"Dockerfile:1: the build stage 'tools' .* is not built here"):
        ImageBuilder(load_catalog(catalog), root=tmp_path / "images").build(only=["a:1"])


def test_the_tenant_images_install_the_one_list_of_pins():
    """The Dockerfiles users build with Docker and our builder read the same requirements file."""
    for name in ("api", "admin", "billing-exporter"):
        text = (ROOT / "tenant_app" / "docker" / f"Dockerfile.{name}").read_text()
        assert "COPY tenant_app/docker/requirements.txt /app/requirements.txt" in text
        assert "pip install -r /app/requirements.txt" in text


def test_an_optional_image_is_built_only_when_its_dockerfile_exists(tmp_path: Path):
    catalog = tmp_path / "images.yaml"
    catalog.write_text(
        "suite: bookworm\nbases: {'debian:bookworm-slim': {packages: []}}\nimages:\n"
        f"  - {{ref: a:1, dockerfile: {tmp_path}/present}}\n"
        f"  - {{ref: b:1, dockerfile: {tmp_path}/absent, optional: true}}\n"
    )
    (tmp_path / "present").write_text("FROM debian:bookworm-slim\n")
    assert [s.ref for s in load_catalog(catalog).wanted()] == ["a:1"]
    (tmp_path / "absent").write_text("FROM debian:bookworm-slim\n")
    assert [s.ref for s in load_catalog(catalog).wanted()] == ["a:1", "b:1"]


def test_images_come_from_the_hosts_own_debian_mirror(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "vendor.list").write_text(
        "deb https://vendor.invalid/apt vendor-bookworm main\n"
    )
    assert debian_sources("bookworm", tmp_path) == [
        "deb http://mirror.invalid/debian bookworm main",
        "deb http://mirror.invalid/debian bookworm-updates main",
        "deb http://mirror.invalid/debian-security bookworm-security main",
    ]
