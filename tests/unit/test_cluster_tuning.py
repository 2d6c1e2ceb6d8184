"""LocalCluster's tuning hook: extra flags replace defaults of the same name; extra environment
is added per component. Only command lines are built here: no process starts."""

from __future__ import annotations

import pytest

from devenv.cluster import LocalCluster, tuned


def by_name(cluster: LocalCluster) -> dict:
    return {c.name: c for c in cluster.components()}


def test_an_extra_flag_replaces_the_default_of_that_name_and_a_new_one_is_added(tmp_path):
    cluster = LocalCluster(tmp_path / "c").with_tuning(
        {
            "kube-controller-manager": ["--controllers=*,-cronjob-controller"],
            "kube-apiserver": ["--event-ttl=5m"],
        }
    )
    kcm = by_name(cluster)["kube-controller-manager"].argv
    assert [a for a in kcm if a.startswith("--controllers")] == ["--controllers=*,-cronjob-controller"]
    assert kcm[-1] == "--controllers=*,-cronjob-controller"
    apiserver = by_name(cluster)["kube-apiserver"].argv
    assert apiserver[-1] == "--event-ttl=5m" and "--profiling=false" in apiserver


def test_environment_is_per_component_on_top_of_the_shared_one(tmp_path):
    cluster = LocalCluster(tmp_path / "c").with_tuning(env={"etcd": {"GOMEMLIMIT": "200MiB", "GOGC": "80"}})
    comps = by_name(cluster)
    assert comps["etcd"].env["GOMEMLIMIT"] == "200MiB" and comps["etcd"].env["PATH"] == "/usr/bin:/bin"
    assert comps["etcd"].env["GOGC"] == "80"  # over the default
    assert "GOMEMLIMIT" not in comps["kube-apiserver"].env


def test_no_tuning_leaves_the_default_command_lines(tmp_path):
    plain = {n: c.argv for n, c in by_name(LocalCluster(tmp_path / "c")).items()}
    assert {n: c.argv for n, c in by_name(LocalCluster(tmp_path / "c").with_tuning()).items()} == plain
    assert tuned(["--a=1", "--b=2"], []) == ["--a=1", "--b=2"]


@pytest.mark.parametrize(
    ("flags", "env"), [({"kube-apiservr": ["--x=1"]}, None), (None, {"etcd2": {}}), ({"etcd": ["x=1"]}, None)]
)
def test_unknown_components_and_malformed_flags_are_refused(tmp_path, flags, env):
    with pytest.raises(ValueError):
        LocalCluster(tmp_path / "c").with_tuning(flags, env)


def test_the_caches_collect_early_and_the_busy_components_spend_less_on_collection(tmp_path):
    env = {n: c.env.get("GOGC") for n, c in by_name(LocalCluster(tmp_path / "c")).items()}
    assert env["kube-controller-manager"] == env["kube-scheduler"] == "50"
    assert env["kube-apiserver"] == env["etcd"] == "100"
