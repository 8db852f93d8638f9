"""Build the sandbox image offline, from Debian packages, and find it again.

The Docker engine here has no registry, so the image is made from a minimal Debian root
filesystem: `mmdebstrap` (preferred; debootstrap as fallback) writes a tar with python3 and
nothing else (``--variant=essential``, documentation, man pages and locales excluded, setuid
and setgid bits stripped), then the engine's import API turns it into an image with
``USER 65534:65534``, ``WORKDIR /workspace``, a fixed ``ENV`` and ``CMD ["python3"]``.

The tag is content-derived: ``agentkit-sandbox:<hash>`` hashes the recipe (this file's
`RECIPE_VERSION`, the Debian suite, the package list, the import changes), so a changed
recipe builds a new image and an unchanged one is reused. ``agentkit-sandbox:latest`` points
at the last image built or reused. Extra Python packages come from Debian as
``python3-<name>`` packages (``numpy`` -> ``python3-numpy``): they are installed with the
same resolver, offline-consistent and need no pip or PyPI inside the build. Where a registry
is reachable, ``sandboxes/image/Dockerfile`` builds an equivalent image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import docker

from agentkit.errors import SandboxError, SetupError

__all__ = ["IMAGE_REPO", "build_image", "default_image", "image_tag", "resolve_image"]

IMAGE_REPO = "agentkit-sandbox"
RECIPE_VERSION = 1
SUITE = os.environ.get("AGENTKIT_DEBIAN_SUITE", "bookworm")
MIRROR = os.environ.get("AGENTKIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3",)
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*",
            "/usr/share/lintian/*", "/usr/share/zoneinfo/*")
CHANGES = (
    "USER 65534:65534",
    "WORKDIR /workspace",
    "ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1",
    'CMD ["python3"]',
)
#: run on the finished root (``$1``): a /workspace owned by the sandbox user, no setuid bits
CUSTOMIZE = (
    'mkdir -p "$1/workspace" && chown 65534:65534 "$1/workspace"',
    'find "$1" -xdev -type f -perm /6000 -exec chmod ug-s {} +',
    'rm -rf "$1/var/cache/apt" "$1/var/lib/apt/lists" "$1/var/log"/*',
)


def debian_packages(extra_packages: Sequence[str]) -> list[str]:
    """The Debian package list: python3 plus ``python3-<name>`` for each extra package."""
    out = set(BASE_PACKAGES)
    for name in extra_packages:
        name = name.strip().lower()
        if not name or not all(c.isalnum() or c in "-.+" for c in name):
            raise SetupError(f"extra package {name!r} is not a valid Debian package name")
        out.add(name if name.startswith("python3-") or name in _PLAIN_OK else f"python3-{name}")
    return sorted(out)


_PLAIN_OK = frozenset({"coreutils", "procps", "file", "less", "sqlite3", "jq", "bc"})


def image_tag(extra_packages: Sequence[str] = ()) -> str:
    """``agentkit-sandbox:<12 hex>`` derived from everything that shapes the image."""
    recipe = {"version": RECIPE_VERSION, "suite": SUITE, "packages": debian_packages(extra_packages),
              "excludes": EXCLUDES, "changes": CHANGES, "customize": CUSTOMIZE}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"{IMAGE_REPO}:{digest}"


def build_image(extra_packages: list[str] | None = None, force: bool = False,
                log: Callable[[str], Any] = print, docker_client: Any = None) -> str:
    """Build (or reuse) the sandbox image and return its content-derived tag. Blocking.

    Raises `SetupError` when neither mmdebstrap nor debootstrap is installed (the message
    says which apt package to install) or when the build fails.
    """
    client = docker_client or docker.from_env(timeout=300)
    tag = image_tag(extra_packages or ())
    try:
        if not force and _image_exists(client, tag):
            log(f"{tag} already built (cached); use --force to rebuild")
            client.api.tag(tag, IMAGE_REPO, "latest")
            return tag
        packages = debian_packages(extra_packages or ())
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="agentkit-image-") as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            _make_rootfs(rootfs, packages, log)
            log(f"importing {rootfs.stat().st_size / 1e6:.0f} MB root filesystem as {tag}")
            repo, _, version = tag.partition(":")
            client.api.import_image_from_file(str(rootfs), repository=repo, tag=version,
                                              changes=[*CHANGES, f"LABEL agentkit.recipe={version}"])
        client.api.tag(tag, IMAGE_REPO, "latest")
        log(f"built {tag} (and {IMAGE_REPO}:latest) in {time.monotonic() - started:.1f} s")
        return tag
    finally:
        if docker_client is None:
            client.close()


def _image_exists(client: Any, tag: str) -> bool:
    try:
        client.api.inspect_image(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _make_rootfs(target: Path, packages: list[str], log: Callable[[str], Any]) -> None:
    if shutil.which("mmdebstrap"):
        cmd = ["mmdebstrap", "--variant=essential", f"--include={','.join(packages)}",
               *(f"--dpkgopt=path-exclude={p}" for p in EXCLUDES),
               *(f"--customize-hook={h}" for h in CUSTOMIZE), SUITE, str(target), MIRROR]
        log(f"mmdebstrap {SUITE} with {', '.join(packages)}")
        _run(cmd)
    elif shutil.which("debootstrap"):
        root = target.parent / "root"
        log(f"debootstrap {SUITE} (minbase) with {', '.join(packages)}")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE,
              str(root), MIRROR])
        for hook in CUSTOMIZE:
            _run(["sh", "-c", hook, "hook", str(root)])
        for pattern in EXCLUDES:
            _run(["sh", "-c", f'rm -rf "$1"{pattern}', "excl", str(root)])
        _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(target), "."])
    else:
        raise SetupError("building the sandbox image needs mmdebstrap (or debootstrap): run "
                         "`apt-get install -y mmdebstrap` as root, then `agentkit sandbox build`")


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise SetupError(f"{cmd[0]} failed (exit {proc.returncode}): {tail}")


def resolve_image(client: Any, wanted: str | None) -> str:
    """The image to run: `wanted` if given, else ``agentkit-sandbox:latest``. Blocking.

    Raises `SandboxError` ``image_missing`` (with the command to run) when it is absent.
    """
    image = wanted or f"{IMAGE_REPO}:latest"
    if not _image_exists(client, image):
        raise SandboxError("image_missing", f"sandbox image {image!r} is not present; run "
                           "`agentkit sandbox build`", retry_hint="not retryable until the image "
                           "is built")
    return image


def default_image(settings_image: str | None = None, docker_client: Any = None) -> str:
    """Resolve the sandbox image name (see `resolve_image`), connecting if needed. Blocking."""
    client = docker_client or docker.from_env(timeout=30)
    try:
        return resolve_image(client, settings_image)
    finally:
        if docker_client is None:
            client.close()
