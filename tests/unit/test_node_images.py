"""The real node's image catalog: one list of images, fed by the same Dockerfiles and pins."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from components.placement import LOCAL_IMAGES
from devenv import dockerfile as df
from devenv.images import ROOT, debian_sources, load_catalog


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
        instructions = df.parse(spec.dockerfile.read_text(), str(spec.dockerfile))
        base = instructions[0].args.split()[0]
        assert base == "scratch" or base in catalog.bases, f"{spec.dockerfile}: FROM {base}"


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
