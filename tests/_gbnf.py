"""A small reader of llama.cpp GBNF, for tests: match strings against a grammar and sample from it.

Covers what agentkit's own grammars use: literals, character classes, rule references,
grouping, alternation and the ``? * + {n} {m,n}`` repetitions. Matching computes, rule by rule
and memoised per position, every place where a rule can end (so alternatives and ambiguity cost
no backtracking); sampling walks the same tree with random choices. Independent of llama.cpp,
so a test can tell exactly which strings a grammar admits.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(\[(?:[^\]\\]|\\.)*\])|([A-Za-z0-9_-]+)|'
                    r'(\{\d+(?:,\d*)?\})|([()|?*+]))')
_PROBE = "abcXYZ 019.,-_\"\\\n{}[]<>/é"


@dataclass
class Grammar:
    rules: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> Grammar:
        rules: dict[str, Any] = {}
        for line in text.splitlines():
            if "::=" in line:
                name, rhs = line.split("::=", 1)
                rules[name.strip()] = _Parser(rhs).alternatives()
        return cls(rules)

    def matches(self, text: str, rule: str = "root") -> bool:
        return len(text) in _Matcher(self, text).ends(("ref", rule), 0)

    def sample(self, rng: random.Random, rule: str = "root") -> str:
        return _sample(self.rules[rule], self, rng)


@dataclass
class _Matcher:
    grammar: Grammar
    text: str
    memo: dict[tuple[str, int], frozenset[int]] = field(default_factory=dict)

    def ends(self, node: Any, pos: int) -> frozenset[int]:
        """Every position where `node` can end when it starts at `pos`."""
        kind, text = node[0], self.text
        if kind == "lit":
            return frozenset({pos + len(node[1])}) if text.startswith(node[1], pos) else frozenset()
        if kind == "cls":
            ok = pos < len(text) and re.fullmatch(node[1], text[pos], re.S)
            return frozenset({pos + 1}) if ok else frozenset()
        if kind == "ref":
            key = (node[1], pos)
            if key not in self.memo:
                self.memo[key] = frozenset()  # no left recursion in our grammars
                self.memo[key] = self.ends(self.grammar.rules[node[1]], pos)
            return self.memo[key]
        if kind == "alt":
            return frozenset().union(*(self.ends(n, pos) for n in node[1]))
        if kind == "seq":
            here = frozenset({pos})
            for item in node[1]:
                here = frozenset().union(*(self.ends(item, p) for p in here))
            return here
        _, inner, lo, hi = node
        out: set[int] = set()
        seen: set[int] = set()
        here, count = frozenset({pos}), 0
        while here and (hi is None or count <= hi):
            if count >= lo:
                out |= here
            if hi is not None and count == hi:
                break
            seen |= here
            here = frozenset().union(*(self.ends(inner, p) for p in here)) - seen
            count += 1
        return frozenset(out)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = [next(t for t in m.groups() if t is not None) for m in _TOKEN.finditer(text)]
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def alternatives(self) -> Any:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return ("alt", options)

    def sequence(self) -> Any:
        items = []
        while self.peek() not in (None, "|", ")"):
            items.append(self.repeat(self.atom()))
        return ("seq", items)

    def atom(self) -> Any:
        tok = self.tokens[self.pos]
        self.pos += 1
        if tok == "(":
            inner = self.alternatives()
            self.pos += 1  # ")"
            return inner
        if tok.startswith('"'):
            return ("lit", json.loads(tok))
        if tok.startswith("["):
            return ("cls", tok)
        return ("ref", tok)

    def repeat(self, node: Any) -> Any:
        tok = self.peek()
        bounds = {"?": (0, 1), "*": (0, None), "+": (1, None)}.get(tok or "")
        if tok and tok.startswith("{"):
            lo, _, hi = tok[1:-1].partition(",")
            bounds = (int(lo), int(lo) if not _ else (int(hi) if hi else None))
        if bounds is None:
            return node
        self.pos += 1
        return ("rep", node, *bounds)


def _sample(node: Any, g: Grammar, rng: random.Random) -> str:
    kind = node[0]
    if kind == "lit":
        return str(node[1])
    if kind == "cls":
        return rng.choice([c for c in _PROBE if re.fullmatch(node[1], c)])
    if kind == "ref":
        return g.sample(rng, node[1])
    if kind == "seq":
        return "".join(_sample(n, g, rng) for n in node[1])
    if kind == "alt":
        return _sample(rng.choice(node[1]), g, rng)
    _, inner, lo, hi = node
    count = rng.randint(lo, hi if hi is not None else lo + 6)
    return "".join(_sample(inner, g, rng) for _ in range(count))
