"""A model's HTTP clients (`agentkit.models._http.Clients`): connections are kept alive and
reused across calls, a fan-out is spread over clients of at most `SHARD` calls each (httpcore's
pool does work quadratic in its connections), and a client given by the caller is the only one
used and is never closed by the adapter.

Connections are counted by a TCP relay in front of a real `ScriptedModelServer`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from agentkit.messages import Message
from agentkit.models._http import SHARD, Clients
from agentkit.models.openai_compat import OpenAICompatModel
from agentkit.models.profiles import get_profile
from agentkit.task import ModelSpec
from agentkit.testing import ScriptedModelServer, reply

Q = [Message.user("hi")]


@contextlib.asynccontextmanager
async def counting_relay(port: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP relay to 127.0.0.1:`port`; yields (its port, [connections accepted])."""
    accepted = [0]

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()


def llm(base_url: str, http: httpx.AsyncClient | None = None) -> OpenAICompatModel:
    return OpenAICompatModel(ModelSpec(model="m", profile="openai"), name="m", api_key=None,
                             base_url=base_url, profile=get_profile("openai"), http=http)


async def test_calls_one_after_another_reuse_one_connection() -> None:
    async with ScriptedModelServer("openai") as srv:
        srv.script(*[reply(f"answer {i}") for i in range(5)])
        async with counting_relay(srv.port) as (port, accepted):
            model = llm(f"http://127.0.0.1:{port}/v1")
            answers = [(await model.turn(Q)).message.text for _ in range(5)]
            await model.aclose()
    assert answers == [f"answer {i}" for i in range(5)]
    assert accepted[0] == 1


async def test_a_fan_out_is_spread_over_clients_of_at_most_shard_calls() -> None:
    clients = Clients(5.0)
    async with contextlib.AsyncExitStack() as stack:
        leased = [await stack.enter_async_context(clients.lease()) for _ in range(2 * SHARD + 1)]
        assert len({id(c) for c in leased}) == 3
        assert all(leased.count(c) <= SHARD for c in leased)
    # all released: the next call goes to the first client again (its idle connections)
    async with clients.lease() as again:
        assert again is leased[0]
    await clients.aclose()


async def test_a_given_client_is_used_for_every_call_and_left_open() -> None:
    async with ScriptedModelServer("openai") as srv:
        srv.script(reply("one"), reply("two"))
        async with httpx.AsyncClient() as mine:
            model = llm(srv.base_url, http=mine)
            await asyncio.gather(model.turn(Q), model.turn(Q))
            await model.aclose()
            assert not mine.is_closed
            async with Clients(5.0, given=mine).lease() as client:
                assert client is mine
