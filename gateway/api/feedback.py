"""Feedback ids: stable UUIDs for the presses the store's reader returns.

A press is ``terminal_id:seq``, the n-th press of an hour count is
``terminal_id:hour:button:n`` (n = 1..count), so a later batch that raises the
count adds ids and keeps the earlier ones. The rows themselves
(:class:`~gateway.stores.reads.Feedback`) come from ``StoreReader.feedback``.
"""

from __future__ import annotations

import hashlib
import uuid

from gateway.stores.reads import Feedback, Selection

__all__ = ["FEEDBACK_NAMESPACE", "Feedback", "Selection", "feedback_id", "uuid5"]

FEEDBACK_NAMESPACE = uuid.UUID("6f1c2a4e-3b5d-5e7f-9a0b-1c2d3e4f5a6b")
_NAMESPACE_BYTES = FEEDBACK_NAMESPACE.bytes


def uuid5(name: str) -> str:
    """``str(uuid.uuid5(FEEDBACK_NAMESPACE, name))``, several times faster (a page has 10,000)."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def feedback_id(f: Feedback) -> str:
    if f.kind == 0:
        return uuid5(f"{f.terminal_id}:{f.key}")
    return uuid5(f"{f.terminal_id}:{f.utc}:{f.key}:{f.n}")
