"""Record once, replay forever: a run's ledger as a test's cassette (see `record_or_replay`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from agentkit.journal import read_journal
from agentkit.resume import replay
from agentkit.run import RunResult, start
from agentkit.task import TaskSpec

__all__ = ["RECORD_ENV", "record_or_replay"]

#: set to 1 to run live against the real provider and (re)write the ledgers
RECORD_ENV = "AGENTKIT_RECORD"


async def record_or_replay(ledger: str | Path, task: TaskSpec | str | Path,
                           **start_options: Any) -> RunResult:
    """Replay the run recorded in `ledger` offline (no network, no Docker, no keys) and fail
    with the first call that has no recorded answer, or an answer that differs from the
    recorded one. If `ledger` does not exist (or ``AGENTKIT_RECORD=1``), run `task` live with
    `start_options` (`environ`, `tools` ...) and write its ledger there: commit that file.

    It works on calls, not HTTP bytes: any provider, streamed or not, records the same way.
    """
    ledger = Path(ledger)
    if ledger.exists() and os.environ.get(RECORD_ENV) != "1":
        result = await replay(ledger).result()
        recorded = read_journal(ledger).finished or {}
        if result.error is not None and result.error.type == "ReplayMiss":
            raise AssertionError(f"replay of {ledger}: {result.error.message}\n"
                                 f"{result.error.details.get('diff', '')}\n(set "
                                 f"{RECORD_ENV}=1 to record the run again)")
        if (result.status, result.answer) != (recorded.get("status"), recorded.get("answer")):
            raise AssertionError(f"replay of {ledger} ended {result.status} with "
                                 f"{result.answer!r}; recorded: {recorded.get('status')} with "
                                 f"{recorded.get('answer')!r}")
        return result
    with tempfile.TemporaryDirectory(prefix="agentkit-record-") as folder:
        result = await start(task, ledger_dir=folder, **start_options).result()
        made = Path(folder) / f"{result.run_id}.jsonl"
        ledger.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, ledger)
        blobs = made.with_name(made.name + ".blobs")
        if blobs.is_dir():
            shutil.copytree(blobs, ledger.with_name(ledger.name + ".blobs"), dirs_exist_ok=True)
    return result
