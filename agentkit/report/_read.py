"""Reading a ledger for the report: each record in file order, and whether its chain holds.

One pass: the hash chain is verified as the file is read (`verify_ledger` hands over each
verified record), and each record is folded into the report at once instead of being kept, so
a 40 MB ledger is parsed once and never held whole in memory. Records after a break in the
chain are read too (the report shows them as unverified).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkit.audit import VerifyResult, verify_ledger
from agentkit.errors import ConfigError

__all__ = ["LedgerScan", "scan_ledger"]


@dataclass
class LedgerScan:
    path: Path
    verify: VerifyResult
    #: records read (verified or not)
    records: int
    #: lines that are not JSON records (a torn or edited line); the report says how many
    unreadable: int


def scan_ledger(path: str | Path, feed: Callable[[dict[str, Any]], None]) -> LedgerScan:
    """Give every readable record of the ledger to `feed`, in file order; verify the chain.

    A file that holds no ledger record at all is a `ConfigError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ledger file (give the .jsonl file a run wrote, "
                          f"e.g. runs/<run id>.jsonl)")
    count = 0

    def take(record: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        feed(record)

    verify = verify_ledger(path, on_record=take)
    unreadable = 0
    if not verify.ok:
        with path.open("rb") as fh:
            for n, line in enumerate(fh):
                if n < verify.count:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    unreadable += 1
                    continue
                if isinstance(record, dict) and isinstance(record.get("kind"), str):
                    take(record)
                else:
                    unreadable += 1
    if count == 0:
        raise ConfigError(f"{path}: no ledger records in this file ({unreadable} unreadable "
                          f"lines); is it an agentkit audit ledger?")
    return LedgerScan(path=path, verify=verify, records=count, unreadable=unreadable)
