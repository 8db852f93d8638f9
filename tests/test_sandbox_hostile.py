"""Hostile code on the real Docker engine: each attack is contained, typed, and survivable.

Every test runs the attack through the `run_code` tool, then proves the run goes on (the next
call prints 42) and, once the runtime closes, that no container with the run's label is left.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from sandbox_helpers import containers_of, run_code

from agentkit.errors import SandboxError
from agentkit.runtime import Runtime

pytestmark = pytest.mark.docker


def host_has(*paths: str) -> list[str]:
    return [p for p in paths if Path(p).exists()]


async def assert_next_call_works(rt: Runtime) -> None:
    out = await run_code(rt, code="print(6*7)")
    assert out.data["exit_code"] == 0 and out.data["stdout"] == "42\n"


@pytest.mark.parametrize("language, code", [
    ("bash", ":(){ :|:& };:"),
    ("python", "import os\nwhile True:\n    os.fork()"),
])
async def test_fork_bomb_is_a_resource_limit_error(rt: Runtime, language: str, code: str) -> None:
    with pytest.raises(SandboxError) as info:
        await run_code(rt, language=language, code=code, timeout_s=5)
    assert info.value.code == "resource_limit"
    first = containers_of(rt.run_id)
    await assert_next_call_works(rt)
    # the fork-bombed container was replaced, not reused
    assert not set(first) & set(containers_of(rt.run_id))


async def test_allocating_8_gb_is_an_oom_error(rt: Runtime) -> None:
    with pytest.raises(SandboxError) as info:
        await run_code(rt, code="x = b'a' * (8 * 1024 ** 3)\nprint(len(x))")
    assert info.value.code == "oom"
    await assert_next_call_works(rt)


async def test_infinite_loop_is_killed_at_the_deadline(rt: Runtime) -> None:
    with pytest.raises(SandboxError) as info:
        await run_code(rt, code="while True:\n    pass", timeout_s=1.5)
    assert info.value.code == "timeout"
    assert containers_of(rt.run_id) == []  # the looping container is already gone
    await assert_next_call_works(rt)


async def test_printing_1_gb_is_truncated_at_the_cap(rt: Runtime) -> None:
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)"
    out = await run_code(rt, code=code)
    cap = rt.task.sandbox.output_bytes
    assert out.data["stdout_truncated"] is True
    assert out.data["stdout"].startswith("x" * cap)
    assert "truncated at" in out.data["stdout"] and len(out.data["stdout"]) < cap + 200
    await assert_next_call_works(rt)


@pytest.fixture
def host_listeners() -> Iterator[list[tuple[str, int]]]:
    """TCP servers on the host's loopback and on the docker bridge gateway, accepting."""
    client = docker.from_env()
    ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    # docker leaves Gateway out when it is the subnet's first address
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    client.close()
    servers, addrs, accepted = [], [], []
    for host in ("127.0.0.1", gateway):
        srv = socket.create_server((host, 0))
        srv.settimeout(0.2)
        servers.append(srv)
        addrs.append((host, srv.getsockname()[1]))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for srv in servers:
                try:
                    accepted.append(srv.accept()[0])
                except OSError:
                    pass
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield addrs
    stop.set()
    thread.join()
    for s in servers + accepted:
        s.close()
    assert accepted == [], "the sandbox reached a host listener"


async def test_no_network_to_internet_host_loopback_or_bridge(
        rt: Runtime, host_listeners: list[tuple[str, int]]) -> None:
    targets = [("1.1.1.1", 80), ("1.1.1.1", 53), *host_listeners]
    code = (
        "import json, socket\nres = {}\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=2).close(); res[host] = 'connected'\n"
        "    except OSError as e:\n"
        "        res[host] = type(e).__name__ + ': ' + str(e)\n"
        "try:\n    socket.getaddrinfo('example.com', 80); res['dns'] = 'resolved'\n"
        "except OSError as e:\n    res['dns'] = str(e)\n"
        "print(json.dumps(res))"
    )
    out = await run_code(rt, code=code)
    results = json.loads(out.data["stdout"])
    assert "connected" not in results.values() and results["dns"] != "resolved", results
    await assert_next_call_works(rt)


async def test_writes_to_etc_usr_and_root_are_refused(rt: Runtime) -> None:
    code = (
        "import json\nres = {}\n"
        "for path in ['/etc/pwned', '/usr/pwned', '/pwned', '/usr/bin/python3', '/etc/passwd']:\n"
        "    try:\n"
        "        open(path, 'a').write('x'); res[path] = 'written'\n"
        "    except OSError as e:\n"
        "        res[path] = e.strerror\n"
        "print(json.dumps(res))"
    )
    out = await run_code(rt, code=code)
    results = json.loads(out.data["stdout"])
    assert set(results.values()) <= {"Read-only file system", "Permission denied"}, results
    assert not host_has("/etc/pwned", "/usr/pwned", "/pwned")  # and the host is untouched
    await assert_next_call_works(rt)


async def test_host_secrets_never_reach_the_sandbox(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = "sk-agentkit-test-FAKEKEY-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", fake)
    monkeypatch.setenv("ANTHROPIC_API_KEY", fake)
    code = ("cat /proc/1/environ /proc/self/environ /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; "
            "echo; env; grep -rs FAKEKEY /proc/*/cmdline /tmp /workspace || true")
    out = await run_code(rt, language="bash", code=code)
    assert "FAKEKEY" not in out.data["stdout"] + out.data["stderr"]
    names = {line.split("=", 1)[0] for line in out.data["stdout"].splitlines() if "=" in line}
    assert not any("KEY" in n or "TOKEN" in n or "SECRET" in n for n in names), names
    assert "PATH" in names  # the allow-list did arrive
    await assert_next_call_works(rt)


async def test_setuid_and_privileges_are_unavailable(rt: Runtime) -> None:
    code = (
        "echo suid=$(find / -xdev -perm /6000 -type f 2>/dev/null | wc -l)\n"
        "chmod u+s /usr/bin/python3 2>/dev/null && echo chmod=ok || echo chmod=refused\n"
        "cp /usr/bin/id /workspace/id && chmod u+s /workspace/id && echo euid=$(/workspace/id -u)\n"
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status\n"
        "id -u"
    )
    out = await run_code(rt, language="bash", code=code)
    text = out.data["stdout"]
    assert "suid=0" in text and "chmod=refused" in text and "euid=65534" in text, text
    assert "CapEff:\t0000000000000000" in text and "CapBnd:\t0000000000000000" in text
    assert "NoNewPrivs:\t1" in text and text.strip().endswith("65534")
    await assert_next_call_works(rt)


async def test_mount_and_unshare_are_refused(rt: Runtime) -> None:
    code = (
        "mkdir -p /tmp/m\n"
        "mount -t tmpfs none /tmp/m && echo mount=ok || echo mount=refused\n"
        "unshare -r true && echo unshare_user=ok || echo unshare_user=refused\n"
        "unshare -m true && echo unshare_mnt=ok || echo unshare_mnt=refused\n"
        "python3 -c 'import ctypes; print(\"raw_unshare=\", ctypes.CDLL(None).unshare(0x10000000))'"
    )
    out = await run_code(rt, language="bash", code=code)
    text = out.data["stdout"]
    assert "mount=refused" in text and "unshare_user=refused" in text, text
    assert "unshare_mnt=refused" in text and "raw_unshare= -1" in text, text
    await assert_next_call_works(rt)


# The in-container agent runs as the same user as the code, so code can attack it. The
# container stays the boundary; the host notices and replaces the sandbox.
GUEST_PID = "gp=$(cut -d' ' -f4 /proc/$PPID/stat)\n"  # bash <- timeout <- agent (its runner)


async def test_killing_the_in_container_agent_is_a_crash_and_the_run_goes_on(rt: Runtime) -> None:
    with pytest.raises(SandboxError) as info:
        await run_code(rt, language="bash", code=GUEST_PID + "kill -9 $gp; sleep 5")
    assert info.value.code == "crashed"
    await assert_next_call_works(rt)


async def test_a_frozen_agent_hits_the_host_deadline(rt: Runtime) -> None:
    with pytest.raises(SandboxError) as info:
        await run_code(rt, language="bash", code=GUEST_PID + "kill -STOP $gp; sleep 60", timeout_s=1)
    assert info.value.code == "timeout" and "container was killed" in info.value.message
    await assert_next_call_works(rt)


def write_to_host_channel(nbytes: int) -> str:
    """Bash that writes `nbytes` x's (no newline) into the container's stdout, the stream the
    host reads its replies from. The agent's own descriptors are out of reach (it is not
    dumpable); the init process's are not, so this is the way in."""
    return f"(head -c {nbytes} /dev/zero | tr '\\0' x > /proc/1/fd/1 &)\n"


async def test_bytes_written_into_the_host_channel_do_not_break_the_answer(rt: Runtime) -> None:
    out = await run_code(rt, language="bash", code=write_to_host_channel(30) + "sleep 1; echo done")
    assert out.data["stdout"] == "done\n"
    await assert_next_call_works(rt)


async def test_flooding_the_host_channel_is_an_output_limit(rt: Runtime) -> None:
    """300 MB into the container's stdout: an ``output_limit`` error (the host stops reading at
    its cap and kills the container), not host memory or a hang; the engine must not hang on
    the kill either."""
    code = write_to_host_channel(300_000_000) + "sleep 5"
    with pytest.raises(SandboxError) as info:
        await run_code(rt, language="bash", code=code)
    assert info.value.code == "output_limit"
    await assert_next_call_works(rt)
