"""Rate limits of the scripted server: a sliding RPM/TPM window, and what a request reserves."""

from __future__ import annotations

import collections
import json
import math
from typing import Any

__all__ = ["RateWindow", "estimate_tokens"]


def estimate_tokens(body: Any) -> int:
    """Tokens a request reserves against TPM: prompt (~4 chars per token) + max_tokens."""
    if not isinstance(body, dict):
        return 0
    prompt = math.ceil(len(json.dumps(body.get("messages") or [])) / 4)
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return prompt + int(limit)


class RateWindow:
    """Sliding-window RPM/TPM: a request is admitted only if, counted with the last
    `window_s` seconds, it stays within both limits; else the seconds until it would fit."""

    def __init__(self, rpm: int | None, tpm: int | None, window_s: float) -> None:
        self.rpm, self.tpm, self.window = rpm, tpm, window_s
        self._log: collections.deque[tuple[float, int]] = collections.deque()

    def admit(self, now: float, tokens: int) -> float | None:
        while self._log and self._log[0][0] <= now - self.window:
            self._log.popleft()
        wait = 0.0
        if self.rpm is not None and len(self._log) + 1 > self.rpm:
            wait = self._log[len(self._log) - self.rpm][0] + self.window - now
        if self.tpm is not None:
            if tokens > self.tpm:
                return self.window
            excess = sum(t for _, t in self._log) + tokens - self.tpm
            for ts, t in self._log:
                if excess <= 0:
                    break
                excess -= t
                wait = max(wait, ts + self.window - now)
        if wait > 0:
            return wait
        self._log.append((now, tokens))
        return None
