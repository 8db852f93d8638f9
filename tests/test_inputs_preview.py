"""`$files`: the input files as the planner and workers are shown them (agentkit.swarm.inputs)."""

from __future__ import annotations

import json
from pathlib import Path

from agentkit.prompting import Prompts
from agentkit.swarm.inputs import PREVIEW_BYTES, describe_inputs


def test_csv_and_json_inputs_are_described_by_shape_and_first_record(tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text("name,city,age\nAda,Oslo,36\nBo,Bergen,41\n")
    (tmp_path / "orders.json").write_text(json.dumps([{"id": 1, "total": 9.5}, {"id": 2}]))
    (tmp_path / "config.json").write_text(json.dumps({"rates": [1, 2, 3], "currency": "NOK"}))
    (tmp_path.parent / "outside.csv").write_text("secret,values\n1,2\n")
    text = describe_inputs(tmp_path, ["people.csv", "orders.json", "config.json",
                                      "../outside.csv", "missing.csv"])
    lines = text.splitlines()
    assert lines[:2] == ["Input files (in the working directory of run_code):", "<untrusted>"]
    assert lines[2] == "- people.csv: CSV, 2 data rows; header: name,city,age; first row: Ada,Oslo,36"
    assert lines[3] == ('- orders.json: JSON list of 2 items; keys of each item: id, total; '
                        'first item: {"id": 1, "total": 9.5}')
    assert lines[4].startswith("- config.json: JSON object with keys: rates (list of 3), "
                               "currency (str); starts: ")
    assert lines[5:] == ["</untrusted>"]  # nothing outside the workspace, nothing missing
    assert describe_inputs(tmp_path, []) == ""


def test_a_large_csv_is_read_only_in_part_and_its_rows_counted(tmp_path: Path) -> None:
    row = "2024-01-01,North,Widget,10,2.50\n"
    rows = PREVIEW_BYTES // len(row) + 500
    (tmp_path / "big.csv").write_text("date,region,product,units,unit_price\n" + row * rows)
    assert f"CSV, about {rows} data rows; header: date,region" in describe_inputs(tmp_path, ["big.csv"])


def test_default_prompts_place_the_files_in_the_planner_and_worker_requests() -> None:
    prompts = Prompts.defaults()
    files = "Input files (...):\n- a.csv: CSV"
    planner = prompts.render("planner.user", goal="G", tools="run_code", max_nodes=3, files=files)
    worker = prompts.render("worker.user", goal="G", tools="run_code", expected="", inputs="",
                            files=files)
    assert files in planner and files in worker
