"""Our language host keeps what the virtualenv holds until site-packages changes (venvcache.go)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, VENV, PulumiProject

pytestmark = pytest.mark.engine


def answer_file(engine, venv: Path, question: str) -> Path:
    digest = hashlib.sha256(f"{venv}\0{question}".encode()).hexdigest()[:24]
    return engine.pulumi_home / "iotistic-language-host" / f"{digest}.json"


@pytest.fixture
def own_venv_project(tmp_path: Path, engine) -> PulumiProject:
    """The password fixture on a virtualenv of its own: the project's, linked entry by entry, with
    a site-packages folder (whose modification time keys the cache) that this test may touch."""
    venv = tmp_path / "venv"
    shutil.copy(VENV / "pyvenv.cfg", venv.mkdir() or venv / "pyvenv.cfg")
    (venv / "bin").symlink_to(VENV / "bin")
    real_site = next((VENV / "lib").glob("python3*/site-packages"))
    site = venv / "lib" / real_site.parent.name / "site-packages"
    site.mkdir(parents=True)
    for entry in real_site.iterdir():
        (site / entry.name).symlink_to(entry)
    dest = tmp_path / "project"
    shutil.copytree(FIXTURES / "password_stack", dest)
    (dest / "Pulumi.yaml").write_text(
        "name: host-cache\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
        f"    virtualenv: {venv}\n"
    )
    (dest / ".state").mkdir()
    env = {**os.environ, **engine.env(backend_url=f"file://{dest / '.state'}", passphrase="test")}
    project = PulumiProject(dir=dest, env=env, engine=engine)
    project.run("stack", "init", "dev")
    yield project
    for question in ("required-packages", "about", "program-dependencies transitive=false"):
        answer_file(engine, venv, question).unlink(missing_ok=True)


def test_answers_about_the_venv_are_kept_until_site_packages_changes(own_venv_project, engine):
    p = own_venv_project
    venv = p.dir.parent / "venv"
    site = next((venv / "lib").glob("python3*/site-packages"))
    p.run("preview")
    plugins = json.loads(answer_file(engine, venv, "required-packages").read_text())
    assert f"{site}@" in plugins["key"]
    assert {plugin["Name"] for plugin in plugins["value"]} >= {"kubernetes", "random"}

    about = json.loads(p.run("about", "--json").stdout)
    assert about["runtime"]["executable"].endswith("/bin/python")
    assert "iotistic" in {d["name"] for d in about["dependencies"]}  # this project, installed in the venv

    # A stored answer is believed as long as site-packages is untouched: a package planted in it
    # is what `pulumi about` then lists, without asking pip.
    cached = answer_file(engine, venv, "program-dependencies transitive=false")
    entry = json.loads(cached.read_text())
    entry["value"].append({"Name": "iotistic-cache-marker", "Version": "1.2.3"})
    cached.write_text(json.dumps(entry))
    listed = json.loads(p.run("about", "--json").stdout)["dependencies"]
    assert {"name": "iotistic-cache-marker", "version": "1.2.3"} in listed

    # Installing or removing a package changes the folder's modification time: asked again.
    stat = site.stat()
    os.utime(site, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    listed = json.loads(p.run("about", "--json").stdout)["dependencies"]
    assert "iotistic-cache-marker" not in {d["name"] for d in listed}
    assert "iotistic" in {d["name"] for d in listed}
