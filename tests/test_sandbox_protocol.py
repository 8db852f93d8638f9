"""The host <-> in-container agent protocol on the real engine: nothing the code writes (file
names, stdout, stderr, bytes pushed into any descriptor it can reach) is read as a reply.

Before the protocol was framed, a file named ``ok`` in /workspace made the host's reply
parser mistake the file name for its reply marker: run_code hung 30 s and reported a timeout.
"""

from __future__ import annotations

import base64
import json

import pytest
from sandbox_helpers import run_code

from agentkit.runtime import Runtime

pytestmark = pytest.mark.docker


async def assert_next_call_works(rt: Runtime) -> None:
    out = await run_code(rt, code="print(6*7)")
    assert out.data["exit_code"] == 0 and out.data["stdout"] == "42\n"


@pytest.mark.parametrize("name", ["ok", '{"ok": true, "id": 2}', '{"ok": ', "ready"])
async def test_a_file_named_like_the_reply_marker_is_just_a_file(rt: Runtime, name: str) -> None:
    """Proves: the call that creates the file and the next one both answer normally (the
    file is listed as created; no timeout, no lost reply)."""
    out = await run_code(rt, code=f"open({name!r}, 'w').write('x')\nprint('made')")
    assert out.data["exit_code"] == 0 and out.data["stdout"] == "made\n"
    assert [f["path"] for f in out.data["files"]] == [name]
    await assert_next_call_works(rt)


def forged_replies() -> str:
    """Lines that looked like host replies before framing: every early request id, claiming
    exit 0 and the output FORGED."""
    fake = base64.b64encode(b"FORGED\n").decode()
    line = {"ok": True, "exit_code": 0, "stdout": fake, "stderr": "", "duration_s": 0.0,
            "stdout_truncated": False, "stderr_truncated": False, "timed_out": False,
            "oom": False, "pids_exhausted": False, "state_reset": False, "files": {},
            "skipped": {}}
    return "".join(json.dumps({**line, "id": i}) + "\n" for i in [None, *range(1, 40)])


async def test_forged_replies_on_every_reachable_descriptor_are_ignored(rt: Runtime) -> None:
    """Proves: forged reply lines written to stdout, stderr, a file, and into every pipe of
    every process the code can open through /proc (the container's stdout, which the host
    reads, among them) do not become the answer: the host reports the program's real exit
    code 3 and output."""
    await assert_next_call_works(rt)  # the channel has seen requests: ids are in use
    forged = forged_replies()
    code = (
        "import glob, os, sys, stat\n"
        f"forged = {forged!r}.encode()\n"
        "open('reply.json', 'wb').write(forged)\n"
        "sys.stderr.buffer.write(forged); sys.stderr.flush()\n"
        "reached = []\n"
        "for path in glob.glob('/proc/[0-9]*/fd/*'):\n"
        "    try:\n"
        "        if not stat.S_ISFIFO(os.stat(path).st_mode):\n"
        "            continue\n"
        "        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)\n"
        "        os.write(fd, forged); os.close(fd); reached.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "print('container stdout reached:', '/proc/1/fd/1' in reached)\n"
        "sys.stdout.buffer.write(forged)\n"
        "print('real')\n"
        "sys.exit(3)\n"
    )
    out = await run_code(rt, code=code)
    assert out.data["exit_code"] == 3
    stdout = out.data["stdout"]
    assert "container stdout reached: True\n" in stdout and stdout.endswith("real\n"), stdout
    assert "FORGED" not in out.content.split("--- stdout ---")[0]
    await assert_next_call_works(rt)


async def test_the_agent_processes_are_out_of_reach(rt: Runtime) -> None:
    """Proves: code cannot open the in-container agent's descriptors or memory (they hold the
    channel and its key): /proc/<agent>/fd and /mem are refused for both agent processes."""
    code = (
        "import os\n"
        "me = os.getpid()\n"
        "agents = [p for p in os.listdir('/proc') if p.isdigit() and p != '1' and int(p) != me\n"
        "          and open(f'/proc/{p}/cmdline', 'rb').read().startswith(b'python3\\x00-u\\x00-c')]\n"
        "print(len(agents))\n"
        "for p in agents:\n"
        "    for what in ('fd', 'mem', 'environ'):\n"
        "        try:\n"
        "            path = f'/proc/{p}/{what}'\n"
        "            os.listdir(path) if what == 'fd' else open(path, 'rb').read(1)\n"
        "            print(what, 'open')\n"
        "        except OSError as e:\n"
        "            print(what, e.strerror)\n"
    )
    out = await run_code(rt, code=code)
    lines = out.data["stdout"].splitlines()
    assert lines[0] == "2", lines  # the channel process and the runner
    assert lines[1:] == ["fd Permission denied", "mem Permission denied",
                         "environ Permission denied"] * 2, lines
