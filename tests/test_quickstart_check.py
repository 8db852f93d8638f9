"""The CI quickstart gate judges answers by the numbers computed from the shipped CSV."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from local_model import check_answer, expected_facts  # noqa: E402

GOOD = """1. Revenue per region: North $4,909.75, East $4835.50, South 7452.5, West 2525.00
2. The best month is 2024-03 with 4204.50.
3. Gizmo sold the most units: 489."""


def test_expected_facts_come_from_the_shipped_csv(tmp_path: Path) -> None:
    facts = expected_facts()
    assert facts["revenue"]["South"] == 7452.5 and facts["best_month"] == "2024-03"
    assert (facts["top_product"], facts["top_units"]) == ("Gizmo", 489)
    other = tmp_path / "s.csv"
    other.write_text("date,region,product,units,unit_price\n2025-05-01,Mars,Bolt,3,2.50\n")
    assert expected_facts(other) == {"revenue": {"Mars": 7.5}, "best_month": "2025-05",
                                     "best_month_revenue": 7.5, "top_product": "Bolt",
                                     "top_units": 3}


def test_a_correct_answer_passes_in_any_number_format() -> None:
    assert check_answer(GOOD, expected_facts()) == []


def test_a_wrong_or_missing_number_is_named() -> None:
    facts = expected_facts()
    assert check_answer(GOOD.replace("7452.5", "7452.9"), facts) == ["revenue South=7452.50"]
    assert check_answer(GOOD.replace(": 489", ": 4890"), facts) == ["top product Gizmo=489"]
    assert check_answer(GOOD.replace("2024-03", "2024-02"), facts) == [
        "best month 2024-03=4204.50"]
    assert len(check_answer("", facts)) == 6
