"""A family of small data tasks for the embedded model, with answers computed here without one.

Each task is written as a new user would write it: the question and the file names, no prompt
text of its own (the run uses the product's default prompts) and the quickstart's model,
consensus and budget settings. The files are in benchmarks/data; together the tasks cover
totals per group, arg-max with its value, counts, filters, a join of two files, CSV and JSON
(a list of records, and records nested in an object).

The expected figures are computed with the csv/json modules; a run is correct when the answer
names every expected group or winner and contains every expected number (within half a cent).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Expect:
    """One fact the answer must state: `value`, next to `name` when there is one."""

    label: str
    value: float
    name: str | None = None


@dataclass(frozen=True)
class FamilyTask:
    name: str
    goal: str
    inputs: tuple[str, ...]
    facts: Callable[[], list[Expect]]


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="") as fh:
        return list(csv.DictReader(fh))


def _best(totals: dict[str, float]) -> tuple[str, float]:
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    assert len(ranked) < 2 or ranked[0][1] != ranked[1][1], f"tie in {ranked[:2]}"  # data check
    return ranked[0]


def _orders() -> list[Expect]:
    revenue: dict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for r in _rows("orders.csv"):
        revenue[r["category"]] += int(r["quantity"]) * float(r["unit_price"])
        count[r["customer"]] += 1
    who, n = _best(dict(count))
    return [*(Expect(f"revenue {c}", round(v, 2), c) for c, v in sorted(revenue.items())),
            Expect("most orders", n, who)]


def _weather() -> list[Expect]:
    rain: dict[str, float] = defaultdict(float)
    rows = _rows("weather.csv")
    for r in rows:
        rain[r["city"]] += float(r["rain_mm"])
    city, total = _best(rain)
    frost = sum(1 for r in rows if r["city"] == "Oslo" and float(r["temp_c"]) < 0)
    return [Expect("wettest city", round(total, 1), city), Expect("Oslo frost days", frost)]


def _books() -> list[Expect]:
    books = json.loads((DATA / "books.json").read_text())
    pages: dict[str, float] = defaultdict(float)
    for b in books:
        pages[b["author"]] += b["pages"]
    author, total = _best(pages)
    return [Expect("books before 1950", sum(1 for b in books if b["year"] < 1950)),
            Expect("most pages", total, author)]


def _staff() -> list[Expect]:
    depts = {d["dept_id"]: d for d in _rows("departments.csv")}
    salary: dict[str, float] = defaultdict(float)
    oslo = 0
    for e in _rows("employees.csv"):
        dept = depts[e["dept_id"]]
        salary[dept["dept_name"]] += int(e["salary"])
        oslo += dept["city"] == "Oslo"
    return [*(Expect(f"salary {d}", v, d) for d, v in sorted(salary.items())),
            Expect("employees in Oslo", oslo)]


def _trips() -> list[Expect]:
    trips = json.loads((DATA / "trips.json").read_text())["trips"]
    km: dict[str, float] = defaultdict(float)
    for t in trips:
        km[t["rider"]] += t["km"]
    rider, total = _best(km)
    fare = sum(t["fare"] for t in trips if t["km"] > 10)
    return [Expect("fare of trips over 10 km", round(fare, 2)),
            Expect("longest distance", round(total, 1), rider)]


FAMILY = (
    FamilyTask("orders", "Using orders.csv (revenue of an order = quantity * unit_price), answer "
               "two separate questions: (1) the total revenue of each category; (2) the customer "
               "who placed the most orders, and how many orders.", ("orders.csv",), _orders),
    FamilyTask("weather", "Using weather.csv (one row per city and day), answer two separate "
               "questions: (1) the city with the highest total rainfall (rain_mm), and that "
               "total; (2) the number of days on which the temperature in Oslo was below "
               "0 degrees.", ("weather.csv",), _weather),
    FamilyTask("books", "Using books.json, answer two separate questions: (1) how many books "
               "were published before 1950; (2) the author with the most pages in total, and "
               "that number of pages.", ("books.json",), _books),
    FamilyTask("staff", "Using employees.csv and departments.csv (join them on dept_id), answer "
               "two separate questions: (1) the total salary of each department, by department "
               "name; (2) the number of employees who work in a department located in Oslo.",
               ("employees.csv", "departments.csv"), _staff),
    FamilyTask("trips", "Using trips.json (its \"trips\" list), answer two separate questions: "
               "(1) the total fare of the trips longer than 10 km; (2) the rider with the "
               "longest total distance (km), and that distance.", ("trips.json",), _trips),
)


#: a number standing alone: not a piece of a date (2024-02-03), a time or an id like n3
_NUMBER = re.compile(r"(?<![\w.:/-])\d[\d,]*(?:\.\d+)?(?![\w:/-]|\.\d)")


def numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in _NUMBER.findall(text)]


def check(answer: str, facts: list[Expect]) -> list[str]:
    """What is missing or wrong in `answer` (empty list: correct)."""
    nums = numbers(answer or "")
    return [f"{f.label}: {f.name + ' ' if f.name else ''}{f.value:g}" for f in facts
            if (f.name is not None and not re.search(rf"\b{re.escape(f.name)}\b", answer or ""))
            or not any(abs(n - f.value) < 0.006 for n in nums)]
