"""Code sandboxes: hardened Docker containers, a warm pool, and the offline image build.

`SandboxClient` makes sessions and `SandboxSession` runs code in one (see `base`); the Docker
backend is `DockerSandboxClient`; `SandboxPool` keeps containers warm for
a run; `build_image` makes the image without a registry. Importing this package does
not import the docker SDK (that happens on first use).
"""

from agentkit.sandboxes.base import ExecResult, SandboxClient, SandboxSession, safe_extract
from agentkit.sandboxes.docker import DockerSandboxClient, DockerSession
from agentkit.sandboxes.image import build_image, default_image, image_tag
from agentkit.sandboxes.pool import SandboxPool

__all__ = [
    "DockerSandboxClient",
    "DockerSession",
    "ExecResult",
    "SandboxClient",
    "SandboxPool",
    "SandboxSession",
    "build_image",
    "default_image",
    "image_tag",
    "safe_extract",
]
