"""The plan: a DAG of sub-tasks, as written by the planner or by hand in a task file.

Shape: ``{"nodes": [{"id", "goal", "depends_on": [ids], "tools": [names], "model"?, "budget"?}]}``
(`Plan`, `PlanNode`, `NodeBudget`: also the type of `TaskSpec.plan`). `validate_plan` checks a
plan with networkx and builds its `PlanGraph`; a plan that cannot run is a `PlanError` listing
every problem at once, in words the planner can act on (it gets the exact message back and
revises: one revision, not five).

`PlanShape` states, for one planning request, what every acceptable plan looks like in a form a
grammar can enforce (node count, tool names, numbered ids, dependencies only on earlier ids);
`PlanToolSpec` carries it to the model with the `submit_plan` tool, so a constrained local
model cannot write an invalid plan at all (`agentkit.models._plan_grammar`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field

from agentkit.errors import PlanError
from agentkit.messages import ToolSpec

__all__ = ["NUMBERED_ID", "NodeBudget", "Plan", "PlanGraph", "PlanNode", "PlanShape", "PlanToolSpec",
           "validate_plan"]

#: the ids a grammar-built plan uses: n1, n2, ... in order (a context-free grammar cannot
#: check that a dependency names an id written earlier unless ids are known in advance)
NUMBERED_ID = re.compile(r"^n([0-9]+)$")


class _PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class NodeBudget(_PlanModel):
    """A node's share of the run's budget (absent fields: an even share of what is left)."""

    tokens: int | None = Field(default=None, ge=1)
    """Tokens this node may use."""
    cost_usd: float | None = Field(default=None, ge=0)
    """USD this node may spend."""
    tool_calls: int | None = Field(default=None, ge=0)
    """Tool calls this node may make."""
    wall_seconds: float | None = Field(default=None, gt=0)
    """Wall-clock seconds this node may take."""


class PlanNode(_PlanModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    """A short unique name (letters, digits, _ . -)."""
    goal: str = Field(min_length=1, max_length=20_000)
    """What this node's sub-agent must do."""
    depends_on: list[str] = Field(default_factory=list, max_length=100)
    """Ids of the nodes whose outputs this node needs (it starts once they finish)."""
    tools: list[str] = Field(default_factory=list, max_length=20)
    """The tools this node may call (a subset of the task's tools)."""
    expected_output: str | None = Field(default=None, max_length=5_000)
    """What the node should return, shown to its sub-agent."""
    model: str | None = None
    """The model for this node (a name in the task's models; default: the worker's)."""
    role: str | None = None
    """A label for the kind of work, kept with the plan (it does not choose the model)."""
    budget: NodeBudget | None = None
    """This node's share of the run's budget (default: an even share of what is left)."""


class Plan(_PlanModel):
    nodes: list[PlanNode] = Field(min_length=1, max_length=1000)
    """The sub-tasks; together they must form a DAG (no cycles)."""


class PlanShape(_PlanModel):
    """What every acceptable plan of one planning request looks like, grammar-checkable.

    New nodes are numbered: the k-th is ``n{first + k - 1}``; a node may depend only on
    `existing` ids (a re-plan's kept nodes) and on new nodes written before it, so ids are
    unique, valid and acyclic by construction; at most `max_nodes` new nodes; tools only from
    `tools`. Every plan of this shape passes `validate_plan` (models aside, which the shape
    leaves unset).
    """

    max_nodes: int = Field(ge=1)
    tools: tuple[str, ...]
    existing: tuple[str, ...] = ()
    first: int = Field(default=1, ge=1)

    def node_id(self, k: int) -> str:
        """The id of the k-th new node (0-based)."""
        return f"n{self.first + k}"

    @classmethod
    def after(cls, kept: Iterable[str], *, max_nodes: int, tools: Iterable[str]) -> PlanShape:
        """The shape of a re-plan: new numbered ids after every kept ``nK``, total node count
        within `max_nodes` (at least one new node, so the request stays answerable)."""
        kept = tuple(kept)
        used = [int(m.group(1)) for m in map(NUMBERED_ID.match, kept) if m]
        return cls(max_nodes=max(1, max_nodes - len(kept)), tools=tuple(tools), existing=kept,
                   first=max(used, default=0) + 1)


class PlanToolSpec(ToolSpec):
    """The `submit_plan` tool as a model sees it, plus the `PlanShape` of this request.

    Hosted models read only the JSON schema; the local model builds its grammar from `shape`.
    """

    shape: PlanShape


@dataclass(frozen=True)
class PlanGraph:
    """A validated plan as a DAG: nodes by id, dependencies and dependents, shape figures.

    `critical_path` counts nodes on the longest dependency chain (the run's serial depth);
    `width` is the widest topological generation, a lower bound of how many nodes can run at
    once (`max_parallel` gives the exact figure).
    """

    plan: Plan
    graph: nx.DiGraph
    nodes: dict[str, PlanNode]
    order: tuple[str, ...]
    critical_path: tuple[str, ...]
    width: int

    def dependents(self, node_id: str) -> list[str]:
        return list(self.graph.successors(node_id))

    def descendants(self, node_id: str) -> set[str]:
        return set(nx.descendants(self.graph, node_id))

    def max_parallel(self, among: Iterable[str] | None = None, *,
                     at_most: int | None = None) -> int:
        """The most nodes of `among` (default: every node) that can be running at once: the
        largest set of them in which none depends on another, directly or through any other
        node (a maximum antichain). Exact, by Dilworth's theorem: ``len(among)`` minus a
        maximum matching of the bipartite graph of pairs (u, v) where v depends on u
        (Hopcroft-Karp; a few ms for a hundred nodes). With `at_most`, the answer is capped
        there, and when one topological generation alone reaches the cap (a fan-out), no
        matching is needed."""
        chosen = set(self.order if among is None else among)
        cap = len(chosen) if at_most is None else min(at_most, len(chosen))
        generations = nx.topological_generations(self.graph)
        if max((len(chosen.intersection(g)) for g in generations), default=0) >= cap:
            return cap
        before = [("before", u) for u in chosen]
        pairs = nx.Graph()
        pairs.add_nodes_from(before)
        pairs.add_edges_from((("before", u), ("after", v)) for u in chosen
                             for v in nx.descendants(self.graph, u) if v in chosen)
        matched = nx.bipartite.hopcroft_karp_matching(pairs, top_nodes=before)
        return min(cap, len(chosen) - len(matched) // 2)

    def without(self, done: Iterable[str]) -> PlanGraph:
        """The plan of the nodes not in `done`, their dependencies on `done` dropped (a resumed
        run's still-to-run part). Exact for `max_parallel` when `done` holds every ancestor of
        its members, as a set of finished nodes does. At least one node must remain."""
        gone = set(done)
        kept = [n.model_copy(update={"depends_on": [d for d in n.depends_on if d not in gone]})
                for n in self.plan.nodes if n.id not in gone]
        return _shape(Plan(nodes=kept), self.graph.subgraph(n.id for n in kept).copy())

    def sinks(self) -> list[str]:
        """Nodes nothing depends on: their outputs are what the synthesizer reads first."""
        return [n for n in self.order if self.graph.out_degree(n) == 0]

    def summary(self) -> dict[str, Any]:
        """The JSON-safe shape recorded in ``plan.created``."""
        return {"nodes": [n.model_dump(exclude_none=True) for n in self.plan.nodes],
                "critical_path": list(self.critical_path), "depth": len(self.critical_path),
                "width": self.width, "sinks": self.sinks()}


def validate_plan(plan: Plan, *, known_tools: Iterable[str], known_models: Iterable[str] = (),
                  max_nodes: int | None = None) -> PlanGraph:
    """Check a plan and build its graph, or raise `PlanError` listing every problem.

    Checked: duplicate ids, dependencies on ids that do not exist, cycles (named, e.g.
    ``a -> b -> a``), nodes that cannot run because they depend on an invalid node
    ("unreachable"), tools and models the task does not have, and more nodes than the budget
    allows. Nodes that feed no sink are fine: every output reaches the synthesizer.
    """
    tools, models = set(known_tools), set(known_models)
    problems: list[str] = []
    ids = [n.id for n in plan.nodes]
    if max_nodes is not None and len(ids) > max_nodes:
        problems.append(f"the plan has {len(ids)} nodes but the budget allows at most "
                        f"{max_nodes}; merge related sub-tasks")
    seen: set[str] = set()
    for dup in sorted({i for i in ids if i in seen or seen.add(i)}):  # type: ignore[func-returns-value]
        problems.append(f"node id {dup!r} is used more than once; ids must be unique")
    bad: set[str] = set()
    for node in plan.nodes:
        problems += _node_problems(node, seen, tools, models, bad)
    graph = nx.DiGraph()
    graph.add_nodes_from(ids)
    graph.add_edges_from((d, n.id) for n in plan.nodes for d in n.depends_on if d in seen)
    problems += _cycle_problems(graph)
    for node_id in sorted(_unreachable(graph, bad)):
        causes = ", ".join(sorted(bad & nx.ancestors(graph, node_id)))
        problems.append(f"node {node_id!r} cannot run: it depends (directly or through other "
                        f"nodes) on an invalid node ({causes})")
    if problems:
        raise PlanError(problems)
    return _shape(plan, graph)


def _node_problems(node: PlanNode, ids: set[str], tools: set[str], models: set[str],
                   bad: set[str]) -> list[str]:
    problems = []
    for dep in node.depends_on:
        if dep not in ids:
            problems.append(f"node {node.id!r} depends on {dep!r}, which is not a node id "
                            f"(ids: {', '.join(sorted(ids))})")
            bad.add(node.id)
    unknown = sorted(set(node.tools) - tools)
    if unknown:
        problems.append(f"node {node.id!r} uses unknown tool(s) {', '.join(unknown)} "
                        f"(available: {', '.join(sorted(tools)) or 'none'})")
        bad.add(node.id)
    if node.model is not None and models and node.model not in models:
        problems.append(f"node {node.id!r} names model {node.model!r}, which the task does not "
                        f"define (defined: {', '.join(sorted(models))})")
        bad.add(node.id)
    return problems


def _cycle_problems(graph: nx.DiGraph) -> list[str]:
    if nx.is_directed_acyclic_graph(graph):
        return []
    problems = []
    for cycle in sorted(islice(nx.simple_cycles(graph), 5), key=lambda c: (len(c), c)):
        start = cycle.index(min(cycle))
        ring = cycle[start:] + cycle[:start]
        path = " -> ".join([*ring, ring[0]])
        problems.append(f"dependency cycle {path}: a node cannot wait for itself; remove one of "
                        f"these dependencies")
    return problems


def _unreachable(graph: nx.DiGraph, bad: set[str]) -> set[str]:
    out: set[str] = set()
    for node_id in bad:
        out |= nx.descendants(graph, node_id)
    return out - bad


def _shape(plan: Plan, graph: nx.DiGraph) -> PlanGraph:
    order = tuple(nx.topological_sort(graph))
    longest = tuple(nx.dag_longest_path(graph)) if order else ()
    width = max((len(g) for g in nx.topological_generations(graph)), default=0)
    return PlanGraph(plan=plan, graph=graph, nodes={n.id: n for n in plan.nodes}, order=order,
                     critical_path=longest, width=width)
