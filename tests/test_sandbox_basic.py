"""Normal use on the real engine: run_code results, files in/out with diffs, persistent
sessions, warm-pool reuse, relaxations in the ledger, orphan sweep and a missing image."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import docker
import pytest
from sandbox_helpers import containers_of, make_runtime, run_code

from agentkit.errors import SandboxError
from agentkit.events import Event
from agentkit.sandboxes.docker import (
    CREATED_LABEL,
    OWNER_LABEL,
    RUN_LABEL,
    DockerSandboxClient,
    owner_label,
    sweep_orphans,
)
from agentkit.sandboxes.image import IMAGE_REPO
from agentkit.sandboxes.pool import BOUND_FACTOR, SandboxPool
from agentkit.task import SandboxSettings
from agentkit.tools.run_code import sandbox_pool

pytestmark = pytest.mark.docker


def kinds(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


async def test_print_6x7_gives_42_and_an_exec_event() -> None:
    events: list[Event] = []
    async with make_runtime(events) as rt:
        out = await run_code(rt, code="print(6*7)")
        assert out.data["exit_code"] == 0 and out.data["stdout"] == "42\n"
        assert out.data["stderr"] == "" and out.data["files"] == []
        assert "42" in out.content
        bash = await run_code(rt, language="bash", code="echo $((6*7)); exit 3")
        assert bash.data["exit_code"] == 3 and bash.data["stdout"] == "42\n"
    execs = kinds(events, "sandbox.exec")
    assert [(e.data["language"], e.data["exit_code"]) for e in execs] == [("python", 0), ("bash", 3)]
    assert execs[0].data["code"] == "print(6*7)" and execs[0].node_id == "node-1"
    # the program's own time, measured in the sandbox, lies within the host's time for the
    # exec (each is rounded to 0.1 ms)
    assert 0 <= out.data["duration_s"] <= execs[0].data["wall_s"] + 1e-3
    assert containers_of(rt.run_id) == []


async def test_files_in_and_out_with_diffs_in_the_ledger() -> None:
    events: list[Event] = []
    async with make_runtime(events) as rt:
        code = ("data = open('in/data.txt').read().split()\n"
                "open('out.txt', 'w').write('\\n'.join(sorted(data)) + '\\n')\n"
                "open('blob.bin', 'wb').write(bytes(range(256)))")
        out = await run_code(rt, code=code, files={"in/data.txt": "b\na\nc\n"})
        files = {f["path"]: f for f in out.data["files"]}
        assert set(files) == {"out.txt", "blob.bin"}
        assert files["out.txt"]["status"] == "created" and files["out.txt"]["size"] == 6
        assert "+a\n+b\n+c" in files["out.txt"]["diff"] and "diff" not in files["blob.bin"]
        # a second call on the same agent's container: change one file, delete another
        out2 = await run_code(rt, code="import os\nopen('out.txt','a').write('d\\n')\nos.remove('blob.bin')")
        files2 = {f["path"]: f for f in out2.data["files"]}
        assert files2["out.txt"]["status"] == "changed" and "+d" in files2["out.txt"]["diff"]
        assert " a\n" in files2["out.txt"]["diff"] and files2["blob.bin"]["status"] == "deleted"
    diffs = kinds(events, "file.diff")
    assert [(e.data["path"], e.data["status"]) for e in diffs] == [
        ("/workspace/blob.bin", "created"), ("/workspace/out.txt", "created"),
        ("/workspace/out.txt", "changed"), ("/workspace/blob.bin", "deleted")]
    assert diffs[2].data["before_sha256"] == diffs[1].data["after_sha256"]


async def test_persistent_session_keeps_variables_per_agent() -> None:
    events: list[Event] = []
    async with make_runtime(events, persistent=True) as rt:
        await run_code(rt, code="counter = 41\nimport math")
        out = await run_code(rt, code="counter += 1\nprint(counter, math.pi > 3)")
        assert out.data["stdout"] == "42 True\n"
        other = await run_code(rt, agent="agent-2", code="print('counter' in globals())")
        assert other.data["stdout"] == "False\n"  # another agent never sees it
        # a timeout restarts the interpreter: the error says so and the next call works
        with pytest.raises(SandboxError) as err:
            await run_code(rt, code="import time\ntime.sleep(30)", timeout_s=1)
        assert err.value.code == "timeout"
        after = await run_code(rt, code="print(globals().get('counter'))")
        assert after.data["stdout"] == "None\n"


async def test_one_shot_python_behaves_like_a_fresh_interpreter() -> None:
    """One-shot Python is forked from the in-container agent; it must still look like
    `python3 -c`: its own __main__, multiprocessing works, exit codes and tracebacks."""
    code = ("import sys\nfrom multiprocessing import Pool\n"
            "def square(x):\n    return x * x\n"
            "if __name__ == '__main__':\n"
            "    with Pool(2) as pool:\n        print(pool.map(square, range(5)))\n"
            "    print(sorted(k for k in globals() if not k.startswith('__')))\n"
            "    sys.exit(7)")
    async with make_runtime([]) as rt:
        out = await run_code(rt, code=code)
        assert out.data["stdout"] == "[0, 1, 4, 9, 16]\n['Pool', 'pool', 'square', 'sys']\n"
        assert out.data["exit_code"] == 7
        err = await run_code(rt, code="def f():\n    raise ValueError('boom')\nf()")
        assert err.data["exit_code"] == 1 and "ValueError: boom" in err.data["stderr"]
        assert 'File "<run_code>", line 2' in err.data["stderr"]


async def test_non_persistent_calls_share_files_but_not_variables() -> None:
    async with make_runtime([]) as rt:
        await run_code(rt, code="x = 1\nopen('keep.txt', 'w').write('kept')")
        out = await run_code(rt, code="print('x' in globals(), open('keep.txt').read())")
        assert out.data["stdout"] == "False kept\n"


class _WarmWatch(list[Event]):
    """An event list (the runtime's sink) that sets `ready` once `want` containers exist."""

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want, self.ready = want, asyncio.Event()

    def append(self, event: Event) -> None:
        super().append(event)
        if len(kinds(self, "sandbox.created")) >= self.want:
            self.ready.set()


async def test_warm_pool_hands_out_prestarted_containers_and_reuses_per_agent() -> None:
    """The first run_code of an agent execs in a container that was started before the call
    (a warm one), never in one started for it."""
    events = _WarmWatch(want=2)
    async with make_runtime(events, pool_size=2) as rt:
        pool = await sandbox_pool(rt.tool_context())
        async with asyncio.timeout(120):  # a hang guard: both refills normally take ~1 s
            await events.ready.wait()
        warm = set(containers_of(rt.run_id))
        assert len(warm) == 2 and pool.stats()["idle"] == 2
        first = await run_code(rt, agent="a", code="import socket; print(socket.gethostname())")
        used = kinds(events, "sandbox.exec")[0].data["container"]
        assert used in {cid[:12] for cid in warm}
        async with pool.lease("a") as session_a:
            assert session_a.id in warm  # the agent got a pre-started container
            async with pool.lease("a") as again:
                assert again is session_a  # same agent -> same container
        async with pool.lease("b") as session_b:
            assert session_b is not session_a  # containers are never shared between agents
            assert session_b.id in warm
        assert first.data["stdout"] == "sandbox\n"
    assert containers_of(rt.run_id) == []


async def test_relaxed_network_is_recorded_and_actually_relaxed() -> None:
    """Control for the hostile network test: with network=bridge the same probe connects."""
    client = docker.from_env()
    subnet = client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Subnet"]
    client.close()
    gateway = str(next(ipaddress.ip_network(subnet).hosts()))
    srv = socket.create_server((gateway, 0))
    port = srv.getsockname()[1]
    events: list[Event] = []
    try:
        async with make_runtime(events, network="bridge", env={"MY_SETTING": "1"}) as rt:
            code = f"import socket, os\nsocket.create_connection(({gateway!r}, {port}), timeout=3)\n" \
                   "print('connected', os.environ['MY_SETTING'])"
            out = await run_code(rt, code=code)
            assert out.data["stdout"] == "connected 1\n"
    finally:
        srv.close()
    relaxed = [e.data for e in kinds(events, "sandbox.relaxed")]
    assert {"setting": "network", "value": "bridge"} in relaxed
    assert {"setting": "env", "names": ["MY_SETTING"]} in relaxed


async def test_missing_image_says_how_to_build_it() -> None:
    events: list[Event] = []
    async with make_runtime(events, image=f"{IMAGE_REPO}:does-not-exist") as rt:
        with pytest.raises(SandboxError) as err:
            await run_code(rt, code="print(1)")
    assert err.value.code == "image_missing" and "agentkit sandbox build" in err.value.message


def test_orphan_sweep_removes_containers_of_dead_owners_only() -> None:
    client = docker.from_env()
    host = socket.gethostname()
    made = {}
    for name, owner, created in [
        ("dead", f"{host}:999999:12345", time.time()),           # pid gone: orphan
        ("alive", None, time.time()),                            # this process: kept
        ("elsewhere", "otherhost:1:1", time.time()),             # cannot tell: kept
        ("ancient", "otherhost:1:1", time.time() - 3 * 86400),   # too old: orphan
    ]:
        labels = {RUN_LABEL: f"sweep-test-{name}", OWNER_LABEL: owner or owner_label(),
                  CREATED_LABEL: f"{created:.0f}"}
        made[name] = client.containers.create(f"{IMAGE_REPO}:latest", ["true"], labels=labels).id
    try:
        removed = set(sweep_orphans(client))
        assert {made["dead"], made["ancient"]} <= removed
        assert not {made["alive"], made["elsewhere"]} & removed
    finally:
        for cid in made.values():
            try:
                client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
        client.close()


async def test_a_dropped_connection_ends_its_container() -> None:
    """Proves: a container lives only as long as the host's connection to it (StdinOnce +
    AutoRemove): after `disconnect`, the engine destroys it without any remove call."""
    settings = SandboxSettings(timeout_s=10)
    client = docker.from_env()
    try:
        async with DockerSandboxClient(settings, run_id="drop-test") as sandboxes:
            session = await sandboxes.create()
            assert (await session.exec("print(5)")).stdout == "5\n"
            since = time.time() - 1
            session.disconnect()  # e.g. the host process died
            events = client.events(decode=True, since=since, until=since + 60,
                                   filters={"type": "container", "event": "destroy",
                                            "container": session.id})
            destroyed = await asyncio.to_thread(next, iter(events), None)
            assert destroyed is not None and destroyed["id"] == session.id
    finally:
        client.close()
    assert containers_of("drop-test") == []


async def test_pool_keeps_a_bounded_number_of_agent_containers() -> None:
    settings = SandboxSettings(timeout_s=10, pool_size=0, max_concurrency=1)
    limit = 1 * BOUND_FACTOR
    async with SandboxPool(DockerSandboxClient(settings, run_id="evict-test"), settings) as pool:
        ids = []
        for n in range(limit + 2):
            async with pool.lease(f"agent-{n}") as session:
                ids.append(session.id)
        alive = set(containers_of("evict-test"))
        assert pool.stats()["bound"] == limit and len(alive) == limit
        assert alive == set(ids[-limit:])  # the least recently used ones went first
    assert containers_of("evict-test") == []
