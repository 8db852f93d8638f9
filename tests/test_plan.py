"""Plan validation: every problem reported at once, in words the planner can act on."""

from __future__ import annotations

import itertools
import random
from typing import Any

import networkx as nx
import pytest

from agentkit.errors import PlanError
from agentkit.plan import Plan, PlanGraph, validate_plan


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


# -- how many nodes can run at once (max_parallel) ----------------------------------------------

def _graph(deps: dict[str, list[str]]) -> PlanGraph:
    return validate_plan(_plan(*({"id": k, "depends_on": v} for k, v in deps.items())),
                         known_tools=[])


def test_max_parallel_of_a_chain_a_fan_out_and_a_diamond() -> None:
    """Proves: a chain runs one node at a time; a fan-out of 16 runs all 16 after its root
    (capped by `at_most`); a diamond runs its two middle nodes together."""
    chain = _graph({f"n{i}": [f"n{i - 1}"] if i else [] for i in range(10)})
    assert chain.max_parallel() == 1
    fan = _graph({"root": [], **{f"leaf{i}": ["root"] for i in range(16)}})
    assert fan.max_parallel() == 16 and fan.max_parallel(at_most=8) == 8
    assert fan.max_parallel([f"leaf{i}" for i in range(5)] + ["root"]) == 5
    diamond = _graph({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    assert diamond.max_parallel() == 2 and diamond.max_parallel(["a", "d"]) == 1
    assert diamond.max_parallel([]) == 0 and diamond.max_parallel(at_most=0) == 0


def test_max_parallel_counts_order_through_nodes_left_out() -> None:
    """Proves: nodes outside `among` still order the others: a and c, with b between them,
    never run together, even though b is not counted."""
    graph = _graph({"a": [], "b": ["a"], "c": ["b"], "x": []})
    assert graph.max_parallel(["a", "c"]) == 1 and graph.max_parallel(["a", "c", "x"]) == 2


def test_max_parallel_is_exact_where_the_widest_generation_is_not() -> None:
    """Proves: a fan-out of three beside two free nodes can run five at once, where the widest
    topological generation (`width`) says three; and on 200 random DAGs of 7 nodes (random
    subsets among them) it agrees with brute force over every subset."""
    graph = _graph({"r": [], "x": [], "y": [], "a": ["r"], "b": ["r"], "c": ["r"]})
    assert graph.width == 3 and graph.max_parallel() == 5
    rng = random.Random(7)
    for _ in range(200):
        graph = _graph({f"n{i}": [f"n{j}" for j in range(i) if rng.random() < 0.35]
                        for i in range(7)})
        among = [n for n in graph.order if rng.random() < 0.8]
        assert graph.max_parallel(among) == _brute_force_antichain(graph, among), graph.graph.edges


def _brute_force_antichain(graph: PlanGraph, among: list[str]) -> int:
    for size in range(len(among), 0, -1):
        for group in itertools.combinations(among, size):
            if not any(nx.has_path(graph.graph, u, v) or nx.has_path(graph.graph, v, u)
                       for u, v in itertools.combinations(group, 2)):
                return size
    return 0


def test_without_keeps_the_nodes_still_to_run() -> None:
    """Proves: dropping finished nodes keeps the rest and their order among themselves."""
    graph = _graph({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    left = graph.without(["a"])
    assert sorted(left.nodes) == ["b", "c", "d"] and left.max_parallel() == 2
    assert left.nodes["b"].depends_on == [] and left.nodes["d"].depends_on == ["b", "c"]
