"""The image builder on small `FROM scratch` images: real umoci layouts, no Debian base needed.

What a user of the builder notices: an unchanged Dockerfile builds nothing, consecutive COPYs are
packed as one layer per origin (the build context, or an earlier stage's folder), and the image
holds exactly the files the Dockerfile names.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devenv.images import ImageBuilder, load_catalog

DOCKERFILE = """\
FROM scratch AS tools
FROM scratch
WORKDIR /app
COPY a.txt ./
COPY b.txt /app/b.txt
COPY --from=tools /opt/tools/x /opt/x
"""


@pytest.fixture
def build(tmp_path: Path):
    """A catalog of one image whose `tools` stage is a folder; returns a build function."""
    context, stage = tmp_path / "context", tmp_path / "stage"
    (stage / "tools").mkdir(parents=True)
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "a.txt").write_text("a1")
    (context / "b.txt").write_text("b1")
    (stage / "tools" / "x").write_text("x1")
    catalog = tmp_path / "images.yaml"
    catalog.write_text(
        "suite: bookworm\nbases: {}\nimages:\n"
        f"  - {{ref: 'test/img:1', dockerfile: {context}/Dockerfile, context: {context},"
        f" stages: {{tools: {{/opt: {stage}}}}}}}\n"
    )
    builder = ImageBuilder(load_catalog(catalog), root=tmp_path / "images")

    def run():
        result = builder.build()
        return builder, result, result.tags["test/img:1"]

    run.context = context  # type: ignore[attr-defined]
    return run


def files_of(builder: ImageBuilder, tag: str, where: Path) -> dict[str, str]:
    subprocess.run(
        ["umoci", "unpack", "--image", builder.layout.image(tag), str(where)], check=True, capture_output=True
    )
    rootfs = where / "rootfs"
    return {str(p.relative_to(rootfs)): p.read_text() for p in rootfs.rglob("*") if p.is_file()}


def test_consecutive_copies_are_one_layer_per_origin_and_an_unchanged_build_builds_nothing(build, tmp_path):
    builder, first, tag = build()
    assert first.built_steps == 3
    # Two layers: the build context's two COPYs together, then the stage's COPY.
    assert len(builder.layout.manifest(tag)["layers"]) == 2
    assert files_of(builder, tag, tmp_path / "u1") == {"app/a.txt": "a1", "app/b.txt": "b1", "opt/x": "x1"}

    _, again, same = build()
    assert (again.built_steps, same) == (0, tag)

    (build.context / "b.txt").write_text("b2")
    _, changed, new = build()
    assert new != tag and changed.built_steps == 3
    assert len(builder.layout.manifest(new)["layers"]) == 2
    assert files_of(builder, new, tmp_path / "u2") == {"app/a.txt": "a1", "app/b.txt": "b2", "opt/x": "x1"}
