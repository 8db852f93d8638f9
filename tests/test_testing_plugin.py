"""The pytest fixtures agentkit ships for users' own tests, run the way a user's project runs
them: a separate pytest session in a fresh folder, with no conftest, where the fixtures come
only from the installed ``pytest11`` entry point."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import asyncio

import httpx

from agentkit.testing import FakeClock, reply


def test_sync_use(scripted_model_server):
    srv = scripted_model_server("deepseek", routes={"planner-model": [reply("plan")]})
    srv.script(reply("shared"))
    with httpx.Client() as client:
        def ask(model):
            return client.post(srv.base_url + "/chat/completions",
                               json={"model": model, "messages": []}).json()
        assert ask("planner-model")["choices"][0]["message"]["content"] == "plan"
        assert ask("x")["choices"][0]["message"]["content"] == "shared"
    SERVERS.append(srv)


def test_two_servers_in_one_test(scripted_model_server):
    a, b = scripted_model_server("openai"), scripted_model_server("anthropic", port=0)
    assert a.port != b.port and b.base_url.endswith(str(b.port))
    SERVERS.extend([a, b])


def test_async_use(scripted_model_server):
    async def go():
        srv = scripted_model_server("deepseek", default=reply("ok"))
        async with httpx.AsyncClient() as client:
            asked = asyncio.ensure_future(client.post(srv.base_url + "/chat/completions",
                                                      json={"model": "m", "messages": []}))
            await srv.wait_until(lambda: srv.stats.requests == 1)
            assert (await asked).status_code == 200
        SERVERS.append(srv)
    asyncio.run(go())


def test_fake_clock(fake_clock):
    assert isinstance(fake_clock, FakeClock)
    asyncio.run(fake_clock.sleep(7))
    assert fake_clock.monotonic() == 7 and fake_clock.sleeps == [7]


def test_servers_were_stopped_after_their_tests():
    assert len(SERVERS) == 4
    for srv in SERVERS:
        try:
            httpx.get(srv.root_url, timeout=5)
        except httpx.ConnectError:
            continue
        raise AssertionError(f"{srv.root_url} still answers after its test ended")


SERVERS = []
'''


def test_fixtures_come_from_the_installed_plugin_and_clean_up(pytester: pytest.Pytester) -> None:
    """A user's project with only a test file: both fixtures resolve (so the entry point is
    registered), a server serves sync and async tests, and every server is stopped when its
    test ends. Run in a subprocess so nothing of this session's plugins leaks in."""
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=5)


def test_the_plugin_can_be_disabled_like_any_other(pytester: pytest.Pytester) -> None:
    """Proves the fixtures above came from the ``agentkit`` entry point: without it they are
    unknown."""
    pytester.makepyfile(test_user="def test_x(fake_clock):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:agentkit", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'fake_clock' not found*"])
