"""cluster.yaml and docs/kuberay-rayjob.yaml: valid for the tools that read them, on the
Ray version gridrun pins, and pointing at one study location on S3."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
IMAGE_TAG = re.compile(r"^(?P<ray>\d+\.\d+\.\d+)-py(?P<py>3\d+)-(?P<platform>gpu|cu\d+)$")


def _pinned_ray() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {re.sub(r"\[.*\]", "", d).split("==")[1] for d in project["dependencies"]
            if d.startswith("ray[")}  # fmt: skip
    assert len(pins) == 1, pins
    return pins.pop()


@pytest.fixture(scope="module")
def ray_version() -> str:
    ray = pytest.importorskip("ray")
    assert ray.__version__ == _pinned_ray(), "the installed Ray is not the pinned one"
    return ray.__version__


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((REPO / "docs" / "kuberay-rayjob.yaml").read_text())


def test_cluster_yaml_passes_the_launchers_own_validation(cluster_config):
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    # what `ray up` does before it touches AWS: merge the provider defaults, validate
    validate_config(prepare_config(copy.deepcopy(cluster_config)))


def test_cluster_yaml_runs_the_pinned_ray_image(cluster_config, ray_version):
    image = cluster_config["docker"]["image"]
    name, tag = image.split(":")
    match = IMAGE_TAG.match(tag)
    assert name == "rayproject/ray" and match, image
    assert match["ray"] == ray_version
    assert match["py"] == "311"  # the Python gridrun is developed and tested on


def test_cluster_yaml_has_gpu_workers_within_bounds(cluster_config):
    types = cluster_config["available_node_types"]
    head = cluster_config["head_node_type"]
    assert types[head]["resources"] == {"CPU": 0}  # trials never run on the head
    (worker,) = [name for name in types if name != head]
    bounds = types[worker]
    assert re.match(r"(g|p)\d", bounds["node_config"]["InstanceType"])  # a GPU family
    assert 0 <= bounds["min_workers"] <= bounds["max_workers"] <= cluster_config["max_workers"]
    # workers write to S3 themselves, so they carry an instance profile
    assert bounds["node_config"]["IamInstanceProfile"]


def test_cluster_yaml_names_the_study_location_once(cluster_config):
    text = (REPO / "cluster.yaml").read_text()
    defined = [opt for opt in cluster_config["docker"]["run_options"] if "GRIDRUN_OUT=" in opt]
    assert len(defined) == 1
    uri = defined[0].split("GRIDRUN_OUT=", 1)[1]
    assert uri.startswith("s3://")
    assert set(re.findall(r"s3://[^\s\"']+", text)) == {uri}
    assert text.count(uri) == 1


def test_cluster_yaml_installs_the_mounted_repository(cluster_config):
    ((target, source),) = cluster_config["file_mounts"].items()
    assert source == "."
    installed = target.replace("~", "$HOME", 1)
    assert any(
        "pip install" in command and installed in command
        for command in cluster_config["setup_commands"]
    )
    assert ".gitignore" in cluster_config["rsync_filter"]  # .venv and runs/ stay home


def test_rayjob_has_what_kuberay_requires(rayjob, ray_version):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    entrypoint = spec["entrypoint"].split()
    assert entrypoint[:2] == ["gridrun", "run"] and entrypoint[2].endswith("grids/study.yaml")
    assert entrypoint[entrypoint.index("--address") + 1] == "auto"
    assert entrypoint[entrypoint.index("--out") + 1].startswith("s3://")
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)

    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray_version
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    workers = group["template"]["spec"]["containers"]
    assert all(int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1 for c in workers)
    containers = [*head["template"]["spec"]["containers"], *workers]
    # every pod runs the same image, built FROM the pinned Ray image (docs/cluster.md)
    images = {c["image"] for c in containers}
    assert len(images) == 1
    assert images.pop().endswith(f":ray{ray_version}-py311-gpu")


def test_the_documented_dockerfile_starts_from_the_pinned_ray_image(ray_version):
    doc = (REPO / "docs" / "cluster.md").read_text()
    (base,) = re.findall(r"^\s*FROM (\S+)$", doc, flags=re.MULTILINE)
    assert base == f"rayproject/ray:{ray_version}-py311-gpu"
