"""The host's half of the framed channel to the in-container agent.

Every message is ``mark(16) | length(4, big-endian) | mac(32) | payload``. A fresh random key
per container is the first line the host writes to the agent; the mark of each direction is
the key's HMAC of that direction's name, and the MAC (HMAC-SHA256 under the key) covers the
direction, the length and the payload. Code in the container never holds the key (the agent
forks its code runner before the key arrives and is unreadable through /proc), so whatever it
writes -- a file named ``ok``, JSON on its stdout, bytes pushed into the container's stdout --
is skipped as noise before a mark, or fails the MAC. The agent keeps the same format in
`_guest.py` (it runs in the container on the standard library alone, so it cannot import
this module).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["Channel", "ChannelCorrupt"]

Direction = bytes  # b"req" (host -> agent) or b"rep" (agent -> host)


class ChannelCorrupt(Exception):
    """A frame started with a valid mark but failed its MAC: bytes were injected into, or
    taken out of, the stream in the middle of a real frame."""


class Channel:
    """Frames for one container's session key."""

    MARK, HEAD = 16, 52

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else secrets.token_bytes(32)
        self.marks = {d: hmac.new(self.key, b"mark:" + d, hashlib.sha256).digest()[:self.MARK]
                      for d in (b"req", b"rep")}

    def hello(self) -> bytes:
        """The first line the host writes: the key, before any code can run."""
        return self.key.hex().encode() + b"\n"

    def frame(self, direction: Direction, payload: bytes) -> bytes:
        size = len(payload).to_bytes(4, "big")
        mac = hmac.new(self.key, direction + size + payload, hashlib.sha256).digest()
        return self.marks[direction] + size + mac + payload

    def parse(self, buf: bytearray, direction: Direction, limit: int) -> bytes | None:
        """The payload of the first frame in `buf` (consumed with anything before it), or None
        when more bytes are needed. Raises `ChannelCorrupt` for a marked frame whose MAC fails
        and `OverflowError` for one longer than `limit`."""
        mark = self.marks[direction]
        start = buf.find(mark)
        if start < 0:
            del buf[:max(0, len(buf) - self.MARK + 1)]  # noise; keep a possible partial mark
            return None
        del buf[:start]
        if len(buf) < self.HEAD:
            return None
        size = int.from_bytes(buf[self.MARK:self.MARK + 4], "big")
        if size > limit:
            raise OverflowError(size)
        if len(buf) < self.HEAD + size:
            return None
        payload = bytes(buf[self.HEAD:self.HEAD + size])
        mac = hmac.new(self.key, direction + bytes(buf[self.MARK:self.MARK + 4]) + payload,
                       hashlib.sha256).digest()
        if not hmac.compare_digest(mac, bytes(buf[self.MARK + 4:self.HEAD])):
            raise ChannelCorrupt("a frame failed its integrity check")
        del buf[:self.HEAD + size]
        return payload
