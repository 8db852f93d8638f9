"""Secrets: the one place that knows what a credential looks like, and how to hide one.

Every way out of a run uses it: the ledger (`agentkit.audit`), the CLI's human and ``--json``
output, error messages, logs and traces; and task files are refused when they hold a key
(`looks_like_secret`). Three kinds of evidence, applied in this order:

- a *key* that names a credential (``Authorization``, ``api_key``, ``x-api-key``, ``cookie``,
  anything ending in ``-token``/``-secret``/``-password``/``-api-key``; counts such as
  ``max_tokens`` are kept);
- a *shape* (``sk-...``, ``sk-ant-...``, ``Bearer ...``, ``AKIA...``, PEM blocks);
- the exact *values* of the run's configured secrets (the API keys read from the environment).

The redactors work on canonical JSON text (one C-speed regex pass per kind instead of a walk
over the structure), which keeps the audit cost per event close to the cost of writing it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from agentkit._canonical import dumps

__all__ = ["REDACTED", "Redactor", "TextRedactor", "looks_like_secret", "redact_keys",
           "redact_patterns", "redact_values", "redaction_pipeline"]

REDACTED = "[REDACTED]"
#: a redactor rewrites the canonical JSON text of an event's `data` (a JSON object)
Redactor = Callable[[str], str]

# A key names a credential if it is one of these, or ends in -token/-secret/-password/-api-key
# (so "max_tokens" and "tokens" are kept: they are counts, not credentials).
_KEY_NAMES = (r"(?:authorization|proxy-authorization|x-api-key|x-goog-api-key|api[-_]?key|"
              r"cookie|set-cookie|passwd|password|secret|token|"
              r"[A-Za-z0-9_-]*[-_](?:token|secret|password|api[-_]?key))")
_SECRET_KEY = re.compile(rf'"(?i:{_KEY_NAMES})":(?:"(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false)')
_SECRET_KEY_NESTED = re.compile(rf'"(?i:{_KEY_NAMES})":[\[{{]')
_SECRET_KEY_EXACT = re.compile(rf"(?i:{_KEY_NAMES})\Z")
# On JSON text: no pattern can cross a string boundary (none matches a bare '"').
# Each alternative starts with a literal (the regex engine then skips ahead fast); the word
# boundary is a lookbehind *after* the literal, which keeps that optimisation.
_SECRET_PATTERN = re.compile(
    r"-----BEGIN [A-Z0-9 ]*(?:PRIVATE KEY|CERTIFICATE)[A-Z ]*-----[^\"]*?-----END [A-Z0-9 ]*-----"
    r"|sk-(?<![A-Za-z0-9]sk-)(?:ant-)?[A-Za-z0-9_\-]{8,}"
    r"|Bearer(?<![A-Za-z0-9]Bearer)(?:\s|\\[tnr])+[A-Za-z0-9._~+/=\-]{6,}"
    r"|AKIA(?<![A-Za-z0-9]AKIA)[0-9A-Z]{16}(?![0-9A-Z])")
#: the shapes, on plain text (task files): the same alternatives with word boundaries
_SECRET_TEXT = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|\bsk-(?:ant-)?[A-Za-z0-9_\-]{8,}"
    r"|\bBearer\s+[A-Za-z0-9._~+/=\-]{6,}|\bAKIA[0-9A-Z]{16}\b")


def looks_like_secret(text: str) -> bool:
    """Whether plain text holds something shaped like a credential (task files refuse it)."""
    return bool(_SECRET_TEXT.search(text))


def redact_keys(text: str) -> str:
    """Replace the value of any key that names a credential (Authorization, cookie, ...)."""
    if not _names_credential_key(_folded(text)):  # fast path: most events
        return text
    if _SECRET_KEY_NESTED.search(text):  # rare: a credential key holding a list or mapping
        return dumps(_redact_keys_deep(json.loads(text)))
    return _SECRET_KEY.sub(lambda m: m.group(0).split('":', 1)[0] + f'":"{REDACTED}"', text)


#: the only characters beyond ASCII that a case-insensitive regex takes for ASCII letters
_ASCII_FOLDS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


def _folded(text: str) -> str:
    """`text` in lower case, with the four characters the ``(?i)`` regexes read as ``i``,
    ``s`` or ``k`` made those letters: a key that the regexes match is in it as the
    lower-case ASCII name."""
    return (text if text.isascii() else text.translate(_ASCII_FOLDS)).lower()


#: every name `_KEY_NAMES` matches ends in one of these (``x-api-key``, ``api_key`` and
#: ``apikey`` in ``key``), followed in the JSON text by ``":``
_KEY_ENDINGS = ('token":', 'key":', 'authorization":', 'secret":', 'cookie":', 'passwd":',
                'password":')


def _names_credential_key(lowered: str) -> bool:
    """Whether a key of the (`_folded`) JSON text names a credential: the key regexes run only
    then.

    Substring searches (C speed) find each key ending in one of `_KEY_ENDINGS`, and the name
    from the quote before it is checked whole, as the regexes would read it (a name holds no
    quote, so that quote is where a match would start). Keys that only end like a credential
    (``call_key`` is in most events) so cost a search, not two regex passes over the event:
    those passes were nine tenths of the ledger's cost per event."""
    for ending in _KEY_ENDINGS:
        at = lowered.find(ending)
        while at >= 0:
            end = at + len(ending) - 2  # before '":'
            if _SECRET_KEY_EXACT.match(lowered, lowered.rfind('"', 0, at) + 1, end):
                return True
            at = lowered.find(ending, at + 1)
    return False


def _redact_keys_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY_EXACT.match(k) and v not in (None, "")
                    else _redact_keys_deep(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_keys_deep(v) for v in value]
    return value


def redact_patterns(text: str) -> str:
    """sk-..., sk-ant-..., Bearer ..., AKIA..., PEM blocks."""
    if not ("sk-" in text or "Bearer" in text or "AKIA" in text or "-----BEGIN" in text):
        return text  # fast path: four substring scans in C
    return _SECRET_PATTERN.sub(REDACTED, text)


def redact_values(secrets: Iterable[str]) -> Redactor:
    """Replace exact occurrences of configured secret values (API keys read from env vars)."""
    values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    escaped = [json.dumps(s, ensure_ascii=False)[1:-1] for s in values]

    def rewrite(text: str) -> str:
        hits = [e for e in escaped if e in text]
        if not hits:
            return text
        out = text
        for secret in hits:
            out = out.replace(secret, REDACTED)
        try:
            json.loads(out)
            return out
        except ValueError:  # a secret spanned JSON syntax: replace inside strings only
            return dumps(_map_strings(json.loads(text), values))

    return rewrite


def _map_strings(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_map_strings(k, secrets): _map_strings(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, secrets) for v in value]
    return value


def redaction_pipeline(secrets: Iterable[str] = ()) -> list[Redactor]:
    """The default pipeline: credential keys, secret patterns, exact secret values."""
    return [redact_keys, redact_patterns, redact_values(secrets)]




class TextRedactor:
    """Redaction for plain text and JSON-able values leaving the run outside the ledger (CLI
    output, error messages, logs, traces): shapes and the run's secret values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self._values:
            text = text.replace(secret, REDACTED)
        return redact_patterns(text)

    def value(self, value: Any) -> Any:
        """Every string inside a JSON-able value (and credential keys' values) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY_EXACT.match(k)
                        and v not in (None, "") else self.value(v)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
