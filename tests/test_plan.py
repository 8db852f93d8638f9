"""Plan validation: every problem reported at once, in words the planner can act on."""

from __future__ import annotations

from typing import Any

import pytest

from agentkit.errors import PlanError
from agentkit.plan import Plan, validate_plan


def _plan(*nodes: dict[str, Any]) -> Plan:
    return Plan.model_validate({"nodes": [{"goal": "do it", **n} for n in nodes]})


def test_valid_diamond_has_critical_path_width_and_sinks() -> None:
    graph = validate_plan(_plan({"id": "a"}, {"id": "b", "depends_on": ["a"]},
                                {"id": "c", "depends_on": ["a"]},
                                {"id": "d", "depends_on": ["b", "c"]}, {"id": "e"}),
                          known_tools=[])
    assert graph.critical_path == ("a", "b", "d") or graph.critical_path == ("a", "c", "d")
    assert graph.width == 2  # generations {a, e}, {b, c}, {d}
    assert set(graph.sinks()) == {"d", "e"}
    assert graph.summary()["depth"] == 3


def test_cycle_is_named_in_order() -> None:
    with pytest.raises(PlanError) as info:
        validate_plan(_plan({"id": "a", "depends_on": ["c"]}, {"id": "b", "depends_on": ["a"]},
                            {"id": "c", "depends_on": ["b"]}), known_tools=[])
    assert "dependency cycle a -> b -> c -> a" in str(info.value)


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(PlanError, match="cycle a -> a"):
        validate_plan(_plan({"id": "a", "depends_on": ["a"]}), known_tools=[])


def test_all_problems_reported_together() -> None:
    plan = _plan({"id": "a", "depends_on": ["ghost"]}, {"id": "b", "depends_on": ["a"]},
                 {"id": "c", "tools": ["web_search", "teleport"]}, {"id": "c"},
                 {"id": "d", "model": "gpt-9"})
    with pytest.raises(PlanError) as info:
        validate_plan(plan, known_tools=["web_search"], known_models=["m"], max_nodes=3)
    problems = info.value.problems
    text = "\n".join(problems)
    assert "5 nodes but the budget allows at most 3" in text
    assert "node id 'c' is used more than once" in text
    assert "'a' depends on 'ghost', which is not a node id" in text
    assert "unknown tool(s) teleport (available: web_search)" in text
    assert "model 'gpt-9'" in text
    # b is unreachable: it waits on a, which can never run
    assert "node 'b' cannot run" in text and "(a)" in text
    assert len(problems) == 6
    assert str(info.value).startswith("the plan was rejected (6 problems)")


def test_disconnected_nodes_are_fine() -> None:
    graph = validate_plan(_plan({"id": "x"}, {"id": "y"}), known_tools=[])
    assert graph.width == 2 and len(graph.critical_path) == 1


def test_bad_ids_are_refused_by_the_model() -> None:
    with pytest.raises(ValueError, match="id"):
        _plan({"id": "has space"})
