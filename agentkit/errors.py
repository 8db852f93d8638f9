"""Every exception agentkit raises, grouped by who has to act.

    AgentkitError                      base of everything below
    ├── UserError                      the person running agentkit must fix something (exit 2)
    │   ├── TaskFileError              bad task file: names FILE:LINE:COL and the field path
    │   ├── ConfigError                bad settings or arguments given in code or on the CLI
    │   └── SetupError                 something to install or build first (image, model, extra)
    ├── ProviderError                  a model endpoint failed: status, retryable, retry_after
    │   ├── ProviderConnectionError    refused, reset, DNS, TLS (retryable)
    │   ├── ProviderTimeout            connect/read/total deadline hit (retryable)
    │   ├── ProviderHTTPError          non-2xx answer; retryable by status (408/409/429/5xx/529)
    │   ├── ProviderResponseError      2xx answer we cannot use (malformed, truncated stream)
    │   └── ProviderUnavailable        every channel/fallback exhausted or circuit open
    ├── ToolError                      a tool failed; returned to the model as a value, with `code`
    │   └── SandboxError               the code sandbox failed (`code`: timeout, oom, ...)
    ├── PlanError                      a plan that cannot run: `problems` lists each issue (the
    │                                  planner reads them and revises; in a task file: the user)
    ├── BudgetExceeded                 a token/cost/time/tool-call/agent/depth budget ran out
    ├── RunFailed                      the run ended without an answer (status says why)
    │   ├── DivergenceError            a resumed run built another request than the recorded one
    │   └── ReplayMiss                 a replayed run made a call the ledger has no answer for
    └── RunCancelled                   the run was cancelled (Ctrl-C, cancel(), deadline)

Constructors never do I/O or log. Backend exceptions (httpx, docker, ddgs) are mapped to these
at the boundary of the module that talks to the backend, so nothing above it sees vendor types.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentkitError",
    "BudgetExceeded",
    "ConfigError",
    "DivergenceError",
    "PlanError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderResponseError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ReplayMiss",
    "RunCancelled",
    "RunFailed",
    "SandboxError",
    "SetupError",
    "TaskFileError",
    "ToolError",
    "UserError",
]


class AgentkitError(Exception):
    """Base class of every agentkit exception."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description, used by the CLI's --json output and the ledger."""
        return {"type": type(self).__name__, "message": str(self)}


# ---------------------------------------------------------------------------------------------
# The user must act


class UserError(AgentkitError):
    """Bad input from the person running agentkit. The CLI exits with code 2."""


class TaskFileError(UserError):
    """A task file that cannot be used. `location` is ``FILE:LINE:COL`` where known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, field: str | None = None) -> None:
        self.file, self.line, self.column, self.field = file, line, column, field
        self.message = message
        super().__init__(self._render())

    @property
    def location(self) -> str:
        parts = [self.file or "<task>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def _render(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.location}: {self.message}{where}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "file": self.file, "line": self.line, "column": self.column,
                "field": self.field}


class ConfigError(UserError):
    """Bad settings given in code or on the command line (not from a task file)."""


class SetupError(UserError):
    """Something must be installed or built first; the message says the command to run."""


# ---------------------------------------------------------------------------------------------
# The provider failed


class ProviderError(AgentkitError):
    """A model endpoint failed. `retryable` is the one fact the retry owner acts on."""

    retryable: bool = False

    def __init__(self, message: str, *, provider: str | None = None, model: str | None = None,
                 status: int | None = None, retry_after: float | None = None,
                 retryable: bool | None = None, body: str | None = None) -> None:
        self.provider, self.model, self.status = provider, model, status
        self.retry_after, self.body = retry_after, body
        if retryable is not None:
            self.retryable = retryable
        who = "/".join(p for p in (provider, model) if p)
        super().__init__(f"{who}: {message}" if who else message)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "provider": self.provider, "model": self.model,
                "status": self.status, "retryable": self.retryable, "retry_after": self.retry_after}


class ProviderConnectionError(ProviderError):
    """Connection refused or reset, DNS or TLS failure."""

    retryable = True


class ProviderTimeout(ProviderError):
    """A connect, read or total deadline passed."""

    retryable = True


class ProviderHTTPError(ProviderError):
    """A non-2xx answer. Retryable for 408, 409, 429 (not quota), 5xx and 529."""


class ProviderResponseError(ProviderError):
    """A 2xx answer that cannot be used: malformed JSON, a stream cut mid-way, a refusal."""


class ProviderUnavailable(ProviderError):
    """Every channel and fallback failed, or the circuit breaker is open."""


# ---------------------------------------------------------------------------------------------
# A tool failed (a value for the model, never a crash of the run)


class ToolError(AgentkitError):
    """A tool call failed. The agent loop hands `code` and the message to the model.

    `code` is a short stable word (``invalid_arguments``, ``blocked``, ``timeout``,
    ``not_found``, ``too_large``, ``rate_limited``, ...). `retry_hint` tells the model whether
    and when trying again can help.
    """

    def __init__(self, code: str, message: str, *, tool: str | None = None,
                 retry_hint: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.code, self.message, self.tool = code, message, tool
        self.retry_hint, self.details = retry_hint, details or {}
        super().__init__(f"{tool + ': ' if tool else ''}[{code}] {message}")

    def model_text(self) -> str:
        """The error as the model reads it in the tool result."""
        hint = f" ({self.retry_hint})" if self.retry_hint else ""
        return f"ERROR [{self.code}] {self.message}{hint}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": type(self).__name__, "code": self.code,
                               "message": self.message, "tool": self.tool}
        if self.retry_hint:
            out["retry_hint"] = self.retry_hint
        if self.details:
            out["details"] = self.details
        return out


class SandboxError(ToolError):
    """The code sandbox failed: ``timeout``, ``oom``, ``resource_limit``, ``output_limit``,
    ``unsafe_archive``, ``engine_unavailable``, ``image_missing``, ..."""


# ---------------------------------------------------------------------------------------------
# The plan


class PlanError(AgentkitError):
    """A plan that cannot run. `problems` lists each issue; the message is what the planner reads."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"- {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"the plan was rejected ({n} problem{'s' if n != 1 else ''}); fix them "
                         f"all and submit the whole plan again:\n{lines}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "problems": self.problems}


# ---------------------------------------------------------------------------------------------
# The run as a whole


class BudgetExceeded(AgentkitError):
    """A budget (tokens, cost_usd, wall_seconds, tool_calls, max_agents, max_depth) ran out."""

    def __init__(self, budget: str, limit: float, requested: float | None = None,
                 message: str | None = None) -> None:
        self.budget, self.limit, self.requested = budget, limit, requested
        super().__init__(message or f"budget {budget!r} exceeded (limit {limit:g})")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "budget": self.budget, "limit": self.limit,
                "requested": self.requested}


class RunFailed(AgentkitError):
    """The run ended without an answer."""


class DivergenceError(RunFailed):
    """A resumed run built another request than the one recorded under the same call key (the
    code, a prompt or an input changed): `call_key` names the call, `diff` shows what differs.
    ``agentkit resume --from-divergence`` continues live from there instead."""

    def __init__(self, message: str, *, call_key: str = "", diff: str = "") -> None:
        super().__init__(message)
        self.call_key, self.diff = call_key, diff

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "call_key": self.call_key, "diff": self.diff}


class ReplayMiss(RunFailed):
    """``agentkit replay``: the replayed run made a call the ledger holds no answer for (a
    replay never makes a live call); `diff` compares it with the nearest recorded request."""

    def __init__(self, message: str, *, call_key: str = "", diff: str = "") -> None:
        super().__init__(message)
        self.call_key, self.diff = call_key, diff

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "call_key": self.call_key, "diff": self.diff}


class RunCancelled(AgentkitError):
    """The run was cancelled (Ctrl-C, ``Run.cancel()``, or its wall-clock deadline)."""
