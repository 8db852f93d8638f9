"""Embedding agentkit in a backend: the function a web handler or a queue worker would call.

    export DEEPSEEK_API_KEY=...
    python examples/backend_job.py "question one" "question two" "question three"

`research_job` is a plain async function: a FastAPI route would `return await
research_job(payload)`, a Celery/RQ/arq worker would run it with `asyncio.run` (or `run_sync`).
Each call builds its own `TaskSpec` and gets its own run: several jobs run concurrently in one
process without sharing state; a job that exceeds its time is cancelled cleanly (sub-agents,
HTTP streams and sandboxes are stopped, the ledger is closed and verifiable) and still returns
a typed result.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from agentkit.swarm import arun
from agentkit.task import TaskSpec

MODELS = {"deepseek": {"profile": "deepseek", "model": "deepseek-chat",
                       "api_key_env": "DEEPSEEK_API_KEY", "max_tokens": 3000}}


def research_task(question: str, job_id: str) -> TaskSpec:
    return TaskSpec.model_validate({
        "name": f"job-{job_id}", "goal": question, "model": "deepseek", "models": MODELS,
        "tools": ["web_search", "web_fetch"],
        "budget": {"max_nodes": 4, "max_agents": 4, "tool_calls": 24, "cost_usd": 0.10,
                   "wall_seconds": 300},
    })


async def research_job(payload: dict[str, Any]) -> dict[str, Any]:
    """What a handler returns as JSON: status, answer, checked citations, cost, ledger path."""
    job_id = str(payload["id"])
    result = await arun(research_task(payload["question"], job_id), run_id=f"job-{job_id}",
                        ledger_dir="runs")
    return result.model_dump(include={"run_id", "status", "answer", "citations", "cost_usd",
                                      "ledger", "error", "ungrounded"})


async def worker(questions: list[str], timeout_s: float = 600.0) -> list[dict[str, Any]]:
    """Several jobs at once, each with its own deadline; one slow job cancels only itself."""

    async def one(i: int, q: str) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(research_job({"id": i, "question": q}), timeout_s)
        except TimeoutError:
            return {"id": i, "status": "cancelled", "error": f"over {timeout_s:g} s"}

    return await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)))


if __name__ == "__main__":
    questions = sys.argv[1:] or ["What is the boiling point of water at 2,000 m altitude?",
                                 "Who designed the Sydney Opera House, and when did it open?"]
    for job in asyncio.run(worker(questions)):
        print(job["status"], job.get("answer") or job.get("error"))
