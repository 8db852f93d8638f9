"""Canonical JSON, the text the audit ledger hashes: sorted keys, no spaces, UTF-8.

`dumps` always works (keys of mixed types become strings); `encoder` makes the fast one a
ledger uses per event: orjson, with json's C encoder for what orjson refuses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["dumps", "encoder", "quote"]


quote: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or \
    json.encoder.py_encode_basestring  # what json.dumps(ensure_ascii=False) uses for a str


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 (what is hashed)."""
    try:
        return _ENCODER.encode(obj)
    except TypeError:  # mixed key types cannot be sorted: make every key a string
        return _ENCODER.encode(_str_keys(obj))


def _str_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_str_keys(v) for v in value]
    return value


def _json_default(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(obj, bytes):
        return {"$bytes": len(obj), "sha256": hashlib.sha256(obj).hexdigest()}
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    return str(obj)


# one encoder, made once: json.dumps with options builds a new one on every call
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            default=_json_default)


#: orjson writes the same canonical text as `dumps` (sorted keys, no spaces, UTF-8) about five
#: times faster: encoding was half of an event's cost. It refuses what `dumps` accepts (keys
#: that are not str, integers beyond 64 bits, lone surrogates, nesting deeper than 254), and
#: those events take `dumps`. Datetimes and dataclasses go to `_json_default`, as with json;
#: NaN and infinities are written as null (valid JSON, which ``NaN`` is not).
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | \
    orjson.OPT_PASSTHROUGH_DATACLASS


def encoder() -> Callable[[Any], str]:
    """`dumps` for one ledger: orjson, then json's C encoder (built once: ``JSONEncoder.encode``
    builds it on every call) for what orjson refuses. Not for concurrent use (the C encoder
    keeps its circular-reference markers between calls); a ledger calls it under its lock."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        slow: Callable[[Any], str] = dumps
    else:
        c_encode = make({}, _json_default, quote, None, ":", ",", True, False, True)
        slow = lambda obj: "".join(c_encode(obj, 0))  # noqa: E731

    def encode(obj: Any) -> str:
        try:
            return orjson.dumps(obj, default=_json_default, option=_ORJSON_OPTIONS).decode()
        except orjson.JSONEncodeError:
            return slow(obj)

    return encode
