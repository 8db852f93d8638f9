"""One owner of usage, and budgets that hold under fan-out, end to end over real HTTP.

Every model call of a run is counted once, for the node that made it, at the model layer: a
billed call whose node attempt then fails is still in `RunResult`, and the run's and each
node's totals equal the sums of the ``model.response`` records in the ledger. A model call
holds its prompt estimate plus ``max_tokens`` (and their cost) before it is sent, so thirty
nodes at once cannot overshoot a token or cost cap: a call whose hold does not fit is never
sent (the server's request count proves it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from agentkit.audit import verify_ledger
from agentkit.run import RunResult, arun
from agentkit.task import TaskSpec
from agentkit.testing import ScriptedModelServer, call, error, reply

ENV = {"USAGE_KEY": "sk-usage-0123456789"}
PRICE = {"input": 2.0, "output": 8.0}  # USD per million tokens


def task(srv: ScriptedModelServer, tmp_path: Path, plan: list[dict[str, Any]],
         **extra: Any) -> TaskSpec:
    return TaskSpec.model_validate({
        "name": "usage", "goal": "count", "model": "m",
        "models": {"m": {"profile": "deepseek", "model": "deepseek-chat", "base_url": srv.base_url,
                         "api_key_env": "USAGE_KEY", "max_tokens": 300, "stream": False,
                         "price": PRICE}},
        "tools": ["list_files"], "workspace": str(tmp_path), "plan": {"nodes": plan},
        "retry": {"attempts": 1, "node_attempts": 2, "replans": 0}, **extra})


def records(result: RunResult, kind: str) -> list[dict[str, Any]]:
    """The ledger's records of one kind."""
    assert result.ledger is not None
    lines = Path(result.ledger).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def ledger_sums(result: RunResult) -> tuple[dict[str | None, float], dict[str | None, int]]:
    """Cost and input tokens of every model.response in the ledger, by node."""
    cost: dict[str | None, float] = defaultdict(float)
    tokens: dict[str | None, int] = defaultdict(int)
    for record in records(result, "model.response"):
        cost[record["node_id"]] += record["data"]["cost_usd"]
        tokens[record["node_id"]] += record["data"]["usage"]["input_tokens"]
    return cost, tokens


async def test_a_billed_call_of_a_failed_attempt_stays_in_the_result(tmp_path: Path) -> None:
    """Attempt 1 of node `a` is answered (billed) and then fails on a 400; attempt 2 succeeds.
    The first attempt's cost is in `nodes["a"]` and in the run's total."""
    usage = {"input_tokens": 1000, "output_tokens": 500}
    async with ScriptedModelServer("deepseek") as srv:
        srv.script(reply(reasoning="Look first.", tool_calls=[call("list_files", {})], usage=usage),
                   error(400, "invalid request: simulated"),
                   reply("done", reasoning="Now.", usage=usage),
                   reply("The answer is done.", reasoning="Write it.", usage=usage))
        result = await arun(task(srv, tmp_path, [{"id": "a", "goal": "look", "tools": ["list_files"]}]),
                            ledger_dir=tmp_path / "runs", environ=ENV)
    assert result.status == "succeeded", result.error
    assert result.nodes["a"].attempts == 2
    per_call = (1000 * 2.0 + 500 * 8.0) / 1_000_000
    assert result.nodes["a"].cost_usd == pytest.approx(2 * per_call)  # the failed attempt's too
    assert result.nodes["a"].usage.input_tokens == 2000
    assert result.cost_usd == pytest.approx(3 * per_call)  # plus the synthesizer
    cost, tokens = ledger_sums(result)
    assert result.cost_usd == pytest.approx(sum(cost.values()))
    assert result.usage.input_tokens == sum(tokens.values())
    for node_id, node in result.nodes.items():
        assert node.cost_usd == pytest.approx(cost[node_id])
    assert verify_ledger(result.ledger).ok  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", [{"tokens": 5000}, {"cost_usd": 0.01}])
async def test_thirty_nodes_at_once_never_overshoot_a_cap(tmp_path: Path,
                                                          budget: dict[str, float]) -> None:
    """30 independent nodes start together; each answer uses 400 + 200 tokens at $2/$8 per
    million ($0.0024). Unreserved, 30 answers spend 18,000 tokens / $0.072; with holds the
    spend stays within the cap and refused calls never reach the server."""
    usage = {"input_tokens": 400, "output_tokens": 200}
    plan = [{"id": f"n{i}", "goal": f"part {i}"} for i in range(30)]
    async with ScriptedModelServer("deepseek", default=reply("ok", usage=usage)) as srv:
        spec = task(srv, tmp_path, plan, budget={**budget, "max_nodes": 30, "max_agents": 30})
        result = await arun(spec, ledger_dir=tmp_path / "runs", environ=ENV)
        sent = srv.stats.requests
    answered = sum(1 for n in result.nodes.values() if n.status == "succeeded")
    if "tokens" in budget:
        used = result.usage.input_tokens + result.usage.output_tokens
        assert 0 < used <= budget["tokens"]
    else:
        assert 0 < result.cost_usd <= budget["cost_usd"] + 1e-12
    assert sent == len(records(result, "model.response"))  # every request sent was answered
    assert 0 < answered < 30  # the cap let some nodes run, and stopped the rest before sending
    exceeded = records(result, "budget.exceeded")
    assert exceeded and all(e["data"]["budget"] in budget for e in exceeded)
