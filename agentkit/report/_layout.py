"""Where each row sits in the DAG drawing: a column per layer, an order within the column.

Layers are longest paths from the sources (a node sits one column right of its deepest
dependency), so every edge points right. Within a column, nodes are ordered by the mean
position of their predecessors (the barycenter heuristic, one sweep), which keeps most edges
short and uncrossed; ties keep the plan's order. Linear in nodes plus edges.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["layout"]


def layout(count: int, edges: Sequence[Sequence[int]]) -> list[list[int]]:
    """[column, position] for each of `count` items, given [from, to, ...] edges."""
    preds: list[list[int]] = [[] for _ in range(count)]
    succs: list[list[int]] = [[] for _ in range(count)]
    for edge in edges:
        a, b = int(edge[0]), int(edge[1])
        if 0 <= a < count and 0 <= b < count and a != b:
            preds[b].append(a)
            succs[a].append(b)
    layer = _layers(count, preds, succs)
    columns: dict[int, list[int]] = {}
    for item in range(count):
        columns.setdefault(layer[item], []).append(item)
    position = [0] * count
    for col in sorted(columns):
        members = columns[col]
        if col > 0:
            def center(item: int) -> float:
                ps = preds[item]
                return sum(position[p] for p in ps) / len(ps) if ps else float(position[item])
            members.sort(key=lambda item: (center(item), item))
        for i, item in enumerate(members):
            position[item] = i
    return [[layer[i], position[i]] for i in range(count)]


def _layers(count: int, preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    """Longest path from a source, by Kahn's order; items on a cycle (a tampered ledger can
    hold one) are put one column after everything placed."""
    waiting = [len(p) for p in preds]
    layer = [0] * count
    ready = [i for i in range(count) if waiting[i] == 0]
    placed = 0
    while ready:
        item = ready.pop()
        placed += 1
        for nxt in succs[item]:
            layer[nxt] = max(layer[nxt], layer[item] + 1)
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    if placed < count:
        last = max(layer) + 1
        for i in range(count):
            if waiting[i] > 0:
                layer[i] = last
    return layer
