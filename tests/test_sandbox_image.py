"""The offline image build: content-derived tags, Debian package mapping, cache, clear errors."""

from __future__ import annotations

import docker
import pytest

from agentkit.errors import SetupError
from agentkit.sandboxes import image
from agentkit.sandboxes.image import IMAGE_REPO, build_image, debian_packages, image_tag


def test_extra_python_packages_map_to_debian_python3_packages() -> None:
    assert debian_packages([]) == ["python3"]
    assert debian_packages(["numpy", "python3-pandas", "NumPy"]) == [
        "python3", "python3-numpy", "python3-pandas"]
    with pytest.raises(SetupError, match="not a valid Debian package name"):
        debian_packages(["numpy; rm -rf /"])


def test_tag_is_derived_from_the_recipe_content(monkeypatch: pytest.MonkeyPatch) -> None:
    base = image_tag()
    assert base.startswith(f"{IMAGE_REPO}:") and len(base.split(":")[1]) == 12
    assert image_tag([]) == base and image_tag(["numpy"]) != base
    assert image_tag(["numpy", "scipy"]) == image_tag(["scipy", "numpy"])
    monkeypatch.setattr(image, "SUITE", "trixie")
    assert image_tag() != base  # another Debian suite is another image


@pytest.mark.docker
def test_build_is_cached_and_tags_latest() -> None:
    logs: list[str] = []
    tag = build_image(log=logs.append)  # builds on a fresh machine, reuses otherwise
    assert tag == image_tag()
    again: list[str] = []
    assert build_image(log=again.append) == tag and "cached" in again[0]
    client = docker.from_env()
    try:
        assert client.images.get(tag).id == client.images.get(f"{IMAGE_REPO}:latest").id
        assert client.images.get(tag).attrs["Config"]["User"] == "65534:65534"
    finally:
        client.close()


@pytest.mark.docker
def test_missing_bootstrap_tool_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agentkit.sandboxes.image.shutil.which", lambda name: None)
    with pytest.raises(SetupError, match="apt-get install -y mmdebstrap"):
        build_image(["pretend-extra-package"], force=True, log=lambda msg: None)
