"""Safe tar handling: crafted archives are refused, and so are links a container makes."""

from __future__ import annotations

import io
import tarfile

import pytest
from sandbox_helpers import containers_of

from agentkit.errors import SandboxError
from agentkit.sandboxes.base import build_tar, check_relative_path, safe_extract
from agentkit.sandboxes.docker import DockerSandboxClient
from agentkit.task import SandboxSettings


def crafted(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("info, why", [
    (member("../escape.txt"), ".."),
    (member("ok/../../escape.txt"), ".."),
    (member("/etc/passwd"), "absolute"),
    (member("link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
    (member("hard", tarfile.LNKTYPE, "/etc/shadow"), "link"),
    (member("dev", tarfile.CHRTYPE), "special"),
    (member("fifo", tarfile.FIFOTYPE), "special"),
])
def test_crafted_members_are_refused(info: tarfile.TarInfo, why: str) -> None:
    data = crafted((member("fine.txt"), b"fine"), (info, b"evil"))
    with pytest.raises(SandboxError) as err:
        safe_extract(data, max_total=1 << 20)
    assert err.value.code == "unsafe_archive" and why in err.value.message


def test_total_size_cap_is_checked_before_reading() -> None:
    data = crafted((member("a"), b"x" * 600), (member("b"), b"y" * 600))
    with pytest.raises(SandboxError, match="exceed 1000 bytes"):
        safe_extract(data, max_total=1000)
    assert safe_extract(data, max_total=1200) == {"a": b"x" * 600, "b": b"y" * 600}


def test_garbage_is_not_a_tar() -> None:
    with pytest.raises(SandboxError) as err:
        safe_extract(b"\x00not a tar" * 100, max_total=1 << 20)
    assert err.value.code == "unsafe_archive"


def test_build_tar_round_trips_and_refuses_escaping_paths() -> None:
    files = {"a.txt": b"A", "dir/sub/b.bin": b"\x00\x01"}
    assert safe_extract(build_tar(files), max_total=100) == files
    for bad in ("../x", "/abs", "a/../../x", "", "..", "a\\b"):
        with pytest.raises(SandboxError) as err:
            check_relative_path(bad)
        assert err.value.code == "unsafe_path"


@pytest.mark.docker
async def test_links_made_inside_a_container_are_refused_on_the_way_out() -> None:
    run_id = "archive-test-links"
    async with DockerSandboxClient(SandboxSettings(timeout_s=10), run_id=run_id) as client:
        session = await client.create()
        result = await session.exec(
            "echo secret > real.txt && ln -s /etc/passwd sym && ln real.txt hard && "
            "mkdir d && ln -s ../../../../etc d/up && mkfifo fifo", language="bash")
        assert result.exit_code == 0, result.stderr
        for path in ("sym", "d/up"):
            with pytest.raises(SandboxError) as err:
                await session.read_files([path])
            assert err.value.code == "unsafe_archive"
        with pytest.raises(SandboxError) as err:
            await session.read_files(["../etc/passwd"])
        assert err.value.code == "unsafe_path"
        # the whole work directory as docker hands it out: links and fifo inside -> refused
        stream, _ = client.docker.api.get_archive(session.id, "/workspace")
        with pytest.raises(SandboxError) as err:
            safe_extract(b"".join(stream), max_total=1 << 20)
        assert err.value.code == "unsafe_archive"
        assert await session.read_files(["real.txt"]) == {"real.txt": b"secret\n"}
    assert containers_of(run_id) == []
