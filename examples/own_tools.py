"""Your own Python functions as tools: decorate, pass them to a run, done.

    python examples/own_tools.py              # offline, on the embedded local model
    python examples/own_tools.py --deepseek   # a hosted model (export DEEPSEEK_API_KEY)

`@tool` (in harbour_tools.py) turns a typed function into a tool: its name, its docstring and
each parameter's description become what the model reads, the signature becomes a JSON Schema,
and arguments are validated before the call. Sync functions run in a worker thread. Tools given
to `run_sync`/`start`/`arun` with `tools=[...]` are offered besides the task's own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # harbour_tools.py sits next to this file

from harbour_tools import ports, tide_times  # noqa: E402

from agentkit import RunResult, TaskSpec, run_sync  # noqa: E402

LOCAL = {"provider": "local", "profile": "local", "model": "qwen2.5-coder-1.5b-instruct",
         "context_tokens": 4096, "max_tokens": 300, "temperature": 0.0}
DEEPSEEK = {"profile": "deepseek", "model": "deepseek-chat", "api_key_env": "DEEPSEEK_API_KEY"}


def task(model: dict[str, object]) -> TaskSpec:
    return TaskSpec.model_validate({
        "name": "own-tools", "mode": "agent", "model": "m", "models": {"m": model},
        "goal": "When is high water in Bergen today? Use the tide_times tool, then answer "
                "with the times it gives.",
        "budget": {"max_steps": 4, "wall_seconds": 600}})


def main(model: dict[str, object], ledger_dir: str = "runs") -> RunResult:
    result = run_sync(task(model), tools=[tide_times, ports], ledger_dir=ledger_dir)
    print(f"{result.status}: {result.answer or result.error}")
    print(f"ledger: {result.ledger}  (agentkit audit show {result.ledger})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deepseek", action="store_true", help="use DeepSeek instead")
    main(DEEPSEEK if parser.parse_args().deepseek else LOCAL)
