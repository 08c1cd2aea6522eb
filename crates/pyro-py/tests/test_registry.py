"""Environments through an OCI registry from Python: push an installed environment to a real
loopback registry (Debian's docker-registry; the shared one test.sh starts, or a private one),
pull it into an empty cache with ``reference=``, and remove it with ``prune_environments(names=)``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from pyro_sdk import InvalidInputError, NotFoundError, Pyro
from support import ShapeCheckedPyro

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
REGISTRY_SCRIPT = REPO_ROOT / "scripts" / "registry.sh"
ENV = "debian:12-base"


@pytest.fixture(scope="module")
def registry():
    shared = os.environ.get("PYRO_TEST_REGISTRY")
    if shared:
        yield shared
        return
    if not os.path.exists("/usr/bin/docker-registry"):
        if os.environ.get("PYRO_REQUIRE_REGISTRY") == "1":
            pytest.fail("docker-registry is not installed: scripts/registry.sh install")
        pytest.skip("docker-registry is not installed (scripts/registry.sh install)")
    d = tempfile.mkdtemp(prefix="pyro-py-reg-")
    addr = subprocess.run(["bash", str(REGISTRY_SCRIPT), "start", d], check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield addr
    finally:
        subprocess.run(["bash", str(REGISTRY_SCRIPT), "stop", d], check=False)
        shutil.rmtree(d, ignore_errors=True)


def test_push_pull_prune_through_a_registry(pyro, registry, tmp_path):
    if not pyro.inspect_environment(ENV)["installed"]:
        pytest.skip(f"{ENV} is not installed in the shared cache (scripts/test.sh installs it)")
    reference = f"{registry}/pyro-py/debian-12-base:1.0.0"
    pushed = pyro.push_environment(ENV, reference)
    assert pushed["reference"] == reference
    assert pushed["digest"].startswith("sha256:")
    assert sorted(layer["title"] for layer in pushed["layers"]) == ["config", "kernel", "rootfs"]
    again = pyro.push_environment(ENV, reference)
    assert again["digest"] == pushed["digest"], "an unchanged environment pushes the same manifest"
    assert again["uploaded_count"] == 0 and not any(layer["uploaded"] for layer in again["layers"]), again

    other = ShapeCheckedPyro(Pyro(base_dir=str(tmp_path / "home"), cache_dir=str(tmp_path / "cache")))
    assert not other.inspect_environment(ENV)["installed"]
    pulled = other.pull_environment(ENV, reference=reference)
    registry_host, _, repository = reference.rpartition(":")[0].partition("/")
    assert pulled["source"] == f"oci://{registry_host}/{repository}@{pushed['digest']}", pulled
    assert pulled["installed"] is True
    source = pathlib.Path(pyro.inspect_environment(ENV)["install_dir"]) / "vmlinux"
    assert pathlib.Path(pulled["kernel_image"]).read_bytes() == source.read_bytes()

    pruned = other.prune_environments(names=[ENV])
    assert "debian_12-base-1.0.0" in pruned["deleted_environment_dirs"], pruned
    assert not other.inspect_environment(ENV)["installed"]


def test_registry_bad_input(pyro, tmp_path):
    other = Pyro(base_dir=str(tmp_path / "home"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(InvalidInputError, match="invalid image reference"):
        other.pull_environment(ENV, reference="no-registry-part")
    with pytest.raises(NotFoundError, match="not installed"):
        other.push_environment(ENV, "127.0.0.1:1/x/y:1")
    with pytest.raises(TypeError):
        other.prune_environments(names=ENV)
    assert not other.inspect_environment(ENV)["installed"]
