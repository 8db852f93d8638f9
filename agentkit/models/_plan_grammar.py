"""The GBNF grammar of one `submit_plan` call: only plans of the request's `PlanShape`.

Built per planning request from `agentkit.plan.PlanShape`, so a grammar-constrained local
model cannot write a plan that `validate_plan` rejects (the 1.5B model, left to the generic JSON
schema, submitted 10 nodes against ``max_nodes: 5`` and then answered in prose). The arguments
are one fixed-layout JSON object, the fields in the order the model is shown:

    {"nodes": [{"id": "n1", "goal": "...", "depends_on": [], "tools": ["run_code"]},
               {"id": "n2", "goal": "...", "depends_on": ["n1"], "tools": []}]}

- at most ``shape.max_nodes`` nodes (capped at `MAX_GRAMMAR_NODES`), at least one;
- the k-th node's id is ``shape.node_id(k)``: unique, matching the id pattern;
- ``depends_on`` of node k is a strictly increasing list drawn from ``shape.existing`` and the
  ids of nodes 1..k-1: no unknown id, no duplicate, no cycle;
- ``tools`` is a list drawn from ``shape.tools``, in that order, without repeats (possibly
  empty);
- ``goal`` is a non-empty JSON string.

The grammar size grows with the square of the node count (each node has its own list of earlier
ids), hence the cap: a small local model writes a handful of nodes, never hundreds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agentkit.plan import PlanShape

__all__ = ["MAX_GRAMMAR_NODES", "describe_plan_action", "plan_rules"]

#: nodes a grammar-built plan may have at most, whatever ``budget.max_nodes`` allows
MAX_GRAMMAR_NODES = 32
_DEPS = json.dumps(', "depends_on": ')
_TOOLS = json.dumps(', "tools": ')
_STRING = r'''{p}-str ::= "\"" {p}-char+ "\""
{p}-char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{{4}} )'''


def _lit(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid GBNF literal


def _increasing(name: str, items: Sequence[str]) -> list[str]:
    """Rules for ``name ::= "[" ... "]"``: a strictly increasing sub-list of `items` as JSON
    strings (empty allowed). ``name-tJ`` is "any increasing list starting at item J or later"."""
    if not items:
        return [f'{name} ::= "[]"']
    rules = [f'{name} ::= "[" {name}-t0? "]"']
    for j, item in enumerate(items):
        later = f' ( ", " {name}-t{j + 1} )?' if j + 1 < len(items) else ""
        rules.append(f"{name}-s{j} ::= {_lit(json.dumps(item))}{later}")
        rest = f" | {name}-t{j + 1}" if j + 1 < len(items) else ""
        rules.append(f"{name}-t{j} ::= {name}-s{j}{rest}")
    return rules


def plan_rules(shape: PlanShape, root: str) -> list[str]:
    """GBNF rules defining `root` as the arguments of one valid `submit_plan` call."""
    p = f"{root}-p"
    count = min(shape.max_nodes, MAX_GRAMMAR_NODES)
    rules = [f'{root} ::= "{{\\"nodes\\": [" {p}-node0 {p}-more0 "]}}"' if count > 1
             else f'{root} ::= "{{\\"nodes\\": [" {p}-node0 "]}}"']
    rules += _increasing(f"{p}-tools", list(dict.fromkeys(shape.tools)))
    for k in range(count):
        earlier = [*shape.existing, *(shape.node_id(i) for i in range(k))]
        rules += _increasing(f"{p}-deps{k}", earlier)
        head = _lit('{"id": ' + json.dumps(shape.node_id(k)) + ', "goal": ')
        rules.append(f'{p}-node{k} ::= {head} {p}-str {_DEPS} {p}-deps{k} {_TOOLS} {p}-tools "}}"')
    for k in range(1, count):
        tail = f" {p}-more{k}" if k < count - 1 else ""
        rules.append(f'{p}-more{k - 1} ::= ( ", " {p}-node{k}{tail} )?')
    rules.append(_STRING.format(p=p))
    return rules


def describe_plan_action(name: str, description: str, shape: PlanShape) -> list[str]:
    """The system-prompt lines that teach the plan format (the grammar enforces it)."""
    tools = ", ".join(json.dumps(t) for t in dict.fromkeys(shape.tools)) or "none"
    one, two = shape.node_id(0), shape.node_id(1)
    example = ('{"nodes": [{"id": "' + one + '", "goal": "<a complete, self-contained sub-task>", '
               '"depends_on": [], "tools": [<tools it needs>]}, {"id": "' + two + '", "goal": '
               '"<another sub-task>", "depends_on": [], "tools": [<tools it needs>]}]}')
    lines = [f"To use {name} ({description.strip()}), write:", f"Action: {name}", example,
             f"Number the nodes {one}, {two}, ... in order; at most "
             f"{min(shape.max_nodes, MAX_GRAMMAR_NODES)} nodes. \"depends_on\" lists only ids "
             f"written before the node, and only when the node needs their results ([] if not). "
             f"\"tools\" may name only: {tools}."]
    if shape.existing:
        lines.append(f"New nodes may also depend on these existing nodes: "
                     f"{', '.join(shape.existing)}.")
    return lines
