"""The plan grammar of the local model: an invalid plan cannot be sampled.

The grammar is read by `tests/_gbnf.py` (independent of llama.cpp): every string it admits is
checked with `validate_plan`, and each constraint is shown to bite with a plan that breaks only
that one. llama.cpp must accept the grammar too; one test plans with the real default model.
"""

from __future__ import annotations

import json
import random

import pytest
from _gbnf import Grammar

from agentkit.errors import PlanError
from agentkit.messages import Message, ToolResultPart, ToolSpec
from agentkit.models._local_actions import action_grammar, after_rejected_plan
from agentkit.models._plan_grammar import MAX_GRAMMAR_NODES, plan_rules
from agentkit.models.base import ModelSettings
from agentkit.models.local import LocalModel
from agentkit.plan import Plan, PlanNode, PlanShape, PlanToolSpec, validate_plan
from agentkit.swarm.agents import SubmitPlan
from agentkit.task import ModelSpec

TOOLS = ("run_code", "web_fetch")
SHAPE = PlanShape(max_nodes=3, tools=TOOLS)


def _grammar(shape: PlanShape) -> Grammar:
    return Grammar.parse("\n".join(plan_rules(shape, "root")))


def _plan(*nodes: tuple[str, list[str], list[str]]) -> str:
    return json.dumps({"nodes": [{"id": i, "goal": f"do {i}", "depends_on": d, "tools": t}
                                 for i, d, t in nodes]})


def _submit_spec(shape: PlanShape) -> PlanToolSpec:
    spec = SubmitPlan(lambda nodes: validate_plan(Plan(nodes=nodes), known_tools=TOOLS),
                      attempts=3, shape=shape).spec()
    assert isinstance(spec, PlanToolSpec)
    return spec


def test_every_plan_the_grammar_admits_is_valid() -> None:
    """300 random walks through the grammar: each parses, passes `validate_plan` with the
    task's limits, and together they reach the node limit and use dependencies (the walk is not
    stuck in a corner where the constraints would not matter)."""
    rng, grammar = random.Random(7), _grammar(SHAPE)
    sizes, with_deps = set(), 0
    for _ in range(300):
        text = grammar.sample(rng)
        assert grammar.matches(text)
        plan = Plan.model_validate(json.loads(text))
        validate_plan(plan, known_tools=TOOLS, max_nodes=SHAPE.max_nodes)
        sizes.add(len(plan.nodes))
        with_deps += any(n.depends_on for n in plan.nodes)
    assert sizes == {1, 2, 3} and with_deps > 30


def test_each_constraint_rejects_the_plan_that_breaks_only_it() -> None:
    grammar = _grammar(SHAPE)
    good = _plan(("n1", [], ["run_code"]), ("n2", [], []), ("n3", ["n1", "n2"], list(TOOLS)))
    assert grammar.matches(good)
    broken = {
        "too many nodes": _plan(*((f"n{k}", [], ["run_code"]) for k in range(1, 5))),
        "tool the task lacks": _plan(("n1", [], ["web_search"])),
        "dependency on a later id": _plan(("n1", ["n2"], []), ("n2", [], [])),
        "dependency on itself": _plan(("n1", [], []), ("n2", ["n2"], [])),
        "dependency on an unknown id": _plan(("n1", [], []), ("n2", ["n9"], [])),
        "duplicate dependency": _plan(("n1", [], []), ("n2", [], []), ("n3", ["n1", "n1"], [])),
        "free id": _plan(("region_revenue", [], [])),
        "ids out of order": _plan(("n2", [], []), ("n1", [], [])),
        "no node": json.dumps({"nodes": []}),
    }
    for label, text in broken.items():
        assert not grammar.matches(text), label
    assert not grammar.matches(good.replace('"do n1"', '""')), "empty goal"
    with pytest.raises(PlanError):  # each of these is one validate_plan rejects, too
        validate_plan(Plan.model_validate(json.loads(broken["too many nodes"])),
                      known_tools=TOOLS, max_nodes=3)


def test_a_replan_numbers_new_nodes_after_the_kept_ones_and_may_depend_on_them() -> None:
    shape = PlanShape.after(["n1", "n2", "fetch"], max_nodes=5, tools=TOOLS)
    assert (shape.first, shape.max_nodes, shape.existing) == (3, 2, ("n1", "n2", "fetch"))
    grammar, rng = _grammar(shape), random.Random(3)
    assert grammar.matches(_plan(("n3", ["n2", "fetch"], []), ("n4", ["n1", "n3"], [])))
    assert not grammar.matches(_plan(("n1", [], [])))  # a kept id is never reused
    assert not grammar.matches(_plan(("n3", ["fetch", "n2"], [])))  # listed in the order shown
    kept = [PlanNode(id=i, goal="kept") for i in ("n1", "n2", "fetch")]
    for _ in range(100):
        new = Plan.model_validate(json.loads(grammar.sample(rng))).nodes
        validate_plan(Plan(nodes=[*kept, *new]), known_tools=TOOLS, max_nodes=5)


def test_large_budgets_are_capped_and_llama_cpp_compiles_the_grammar() -> None:
    from llama_cpp.llama_grammar import LlamaGrammar

    big = _grammar(PlanShape(max_nodes=1000, tools=TOOLS))
    ids: list[tuple[str, list[str], list[str]]] = [
        (f"n{k}", [], []) for k in range(1, MAX_GRAMMAR_NODES + 2)]
    assert big.matches(_plan(*ids[:-1])) and not big.matches(_plan(*ids))
    spec = _submit_spec(SHAPE)
    for think in (False, True):
        text = action_grammar([spec], think=think, allow_final=False)
        assert LlamaGrammar.from_string(text, verbose=False) is not None


def _rejection(name: str = "submit_plan") -> Message:
    return Message(role="tool", parts=(ToolResultPart(
        call_id="c", name=name, content="invalid_plan: too many nodes", is_error=True),))


def test_after_a_rejected_plan_only_submit_plan_is_offered() -> None:
    """The planner's step after a rejection can only be a new plan: no `final`, no other tool.
    Before it, `final` is never offered to a planner either (its work ends with a plan)."""
    search = ToolSpec(name="web_search", description="Search", parameters={
        "type": "object", "required": ["query"], "properties": {"query": {"type": "string"}}})
    tools = [search, _submit_spec(SHAPE)]
    model = LocalModel(ModelSpec(provider="local", model="m"))
    first = [Message.system("plan"), Message.user("task")]
    fresh_chat, fresh = model._request(first, tools, ModelSettings())
    again_chat, again = model._request([*first, _rejection()], tools, ModelSettings())
    assert again_chat[:2] == fresh_chat[:2]  # the grammar narrows; the cached prompt stays
    root = {line.split(" ::= ")[0]: line for line in fresh.splitlines()}["root"]
    assert root == "root ::= ( ak-call-0 | ak-call-1 )"
    assert again.splitlines()[0] == "root ::= ( ak-call-0 )"
    assert '"Action: submit_plan\\n"' in again and "web_search" not in again
    assert "ak-final" not in fresh and "ak-final" not in again
    # the rule is about the plan tool's error only
    assert after_rejected_plan([*first, _rejection("web_search")], tools) == []
    assert after_rejected_plan(first, tools) == []


@pytest.mark.local_model
async def test_real_model_asked_for_four_questions_with_two_nodes_writes_a_valid_plan() -> None:
    """The failure the issue saw: more nodes than `max_nodes`. Under the grammar the real model
    writes at most two, with tools and ids of the task (one short generation)."""
    from agentkit.models.local import LoadedModels
    from agentkit.models.weights import DEFAULT_LOCAL_MODEL

    registry = LoadedModels()
    model = LocalModel(ModelSpec(provider="local", model=DEFAULT_LOCAL_MODEL, context_tokens=2048),
                       registry=registry)
    spec = _submit_spec(PlanShape(max_nodes=2, tools=("run_code",)))
    msgs = [Message.system("You are a planner. Split the task into one node per question and "
                           "submit the plan with submit_plan."),
            Message.user("From people.csv answer: (1) the average age; (2) the oldest person; "
                         "(3) the number of cities; (4) the total salary per city.")]
    try:
        turn = await model.turn(msgs, [spec], ModelSettings(seed=1, max_tokens=300))
    finally:
        registry.unload_all()
    (call,) = turn.message.tool_calls
    assert call.name == "submit_plan"
    plan = Plan.model_validate(call.arguments)
    validate_plan(plan, known_tools=["run_code"], max_nodes=2)
    assert [n.id for n in plan.nodes] == ["n1", "n2"][:len(plan.nodes)]


async def test_grammar_built_plans_name_the_tasks_own_tools_not_delegate() -> None:
    """`delegate` (a sub-team) is offered to nodes while depth allows, but not in the shape a
    grammar enforces: the 1.5B model gave every node of a CSV task to a sub-team."""
    from agentkit.budget import Budget
    from agentkit.runtime import Runtime
    from agentkit.swarm.agents import DELEGATE, Planner, known_tools
    from agentkit.swarm.context import SwarmContext
    from agentkit.task import TaskSpec

    task = TaskSpec(name="t", goal="g", model="m", models={"m": ModelSpec(model="x")},
                    tools=["run_code"])
    async with Runtime(task) as rt:
        ctx = SwarmContext(runtime=rt, budget=Budget.root(task.budget, emit=rt.emit, clock=rt.clock))
        assert DELEGATE in known_tools(rt, 0)
        assert Planner(ctx)._shape_tools() == ("run_code",)
