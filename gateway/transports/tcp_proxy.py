"""The PROXY header a load balancer sends first (``tcp.proxy_protocol``), read off a stream.

The parsing is :mod:`protocols.proxy_protocol`'s; this reads the bytes for it,
bounded: a v1 line is refused past 107 bytes, a v2 header past 16 bytes and
its length, and the whole header must arrive within ``timeout_s``. The bytes
read past the header are the terminal's and go to its session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from protocols.proxy_protocol import BadProxyHeader, ProxyHeader, parse

PROXY_HEADER_TIMEOUT_S = 5.0
_READ_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class Relayed:
    """A whole header and the bytes that followed it in the same reads."""

    header: ProxyHeader
    rest: bytes

    def peer(self, own: str) -> str:
        """The terminal's address as the logs and quarantine name peers; ``own`` if unnamed."""
        if self.header.source is None:
            return own
        host, port = self.header.source
        return f"{host}:{port}"


async def read_proxy_header(
    reader: asyncio.StreamReader, timeout_s: float = PROXY_HEADER_TIMEOUT_S
) -> Relayed | None:
    """The header at the start of the connection; None if it closed having sent nothing.

    Raises :class:`BadProxyHeader` for anything else: bytes that are no header,
    a close inside one, or no whole header within ``timeout_s``.
    """
    data = b""
    try:
        async with asyncio.timeout(timeout_s):
            while (header := parse(data) if data else None) is None:
                chunk = await reader.read(_READ_CHUNK)
                if not chunk:
                    if not data:
                        return None  # a port probe: nothing to keep
                    raise BadProxyHeader("the connection closed inside the header", raw=data)
                data += chunk
    except TimeoutError:
        raise BadProxyHeader(f"no whole PROXY header within {timeout_s:g} s", raw=data) from None
    return Relayed(header, data[header.length :])
