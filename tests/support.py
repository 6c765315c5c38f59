"""Helpers shared by the gateway tests: vectors, a raw protocol client, the test registry.

Processes (the gateway, brokers, databases) are started by ``firmware_sim.harness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from firmware_sim.harness import write_config as harness_write_config
from protocols import constants as c
from protocols.frames import HEADER, Frame, crc16, encode, tag
from protocols.stream import FrameStream

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VECTORS: dict[str, Any] = json.loads(
    (SHARED / "protocol" / "vectors-v1.json").read_text(encoding="utf-8")
)
KEYS = {int(k): bytes.fromhex(v) for k, v in VECTORS["terminals"].items()}
VECTOR_HEX = {v["name"]: bytes.fromhex(v["hex"]) for v in VECTORS["vectors"] if "hex" in v}


WRONG_KEY = bytes(range(100, 116))


def keys(terminal_id: int) -> bytes | None:
    return KEYS.get(terminal_id)


def seal(
    kind: int,
    terminal_id: int,
    payload: bytes,
    key: bytes | None,
    *,
    version: int = c.VERSION,
    length: int | None = None,
) -> bytes:
    """A frame with any header and payload, tagged with ``key`` and a correct crc."""
    head = HEADER.build(
        {
            "magic": c.MAGIC,
            "version": version,
            "type": kind,
            "terminal_id": terminal_id,
            "length": len(payload) if length is None else length,
        }
    )
    body = head + payload
    body += tag(key, body) if key is not None else c.ZERO_TAG
    return body + crc16(body).to_bytes(2, "big")


REGISTRY_TOML = """
[[company]]
id = "acme"
name = "Acme Retail"
[[location]]
id = 10
company = "acme"
name = "Finland"
[[location]]
id = 11
company = "acme"
name = "Helsinki store"
parent = 10
timezone = "Europe/Helsinki"
[[survey]]
id = 100
company = "acme"
question = "How was your visit today?"
locale = "en-US"
scale = "four"
misuse_interval_s = 5
[[terminal]]
id = 1001
key = "000102030405060708090a0b0c0d0e0f"
location = 11
survey = 100
name = "Entrance"
[[terminal]]
id = 1002
key = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
location = 11
survey = 100
"""


# The harness's write_config with the two terminals above as its default registry.
write_config = partial(harness_write_config, registry=REGISTRY_TOML)


@dataclass
class RawTerminal:
    """A protocol-level client: sends bytes, reads decoded answers."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    stream: FrameStream = field(default_factory=lambda: FrameStream(KEYS.get, zero_tag_naks=True))
    pending: list[Any] = field(default_factory=list)

    @classmethod
    async def connect(cls, port: int, **kwargs: Any) -> RawTerminal:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **kwargs)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, frame: Frame) -> None:
        await self.send(encode(frame, KEYS[frame.terminal_id]))

    async def receive(self, timeout: float = 5.0) -> Any:
        """The next answer frame (or codec error); raises EOFError when the gateway closed."""
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("connection closed by the gateway")
            self.pending.extend(self.stream.feed(data))
        return self.pending.pop(0)

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the gateway closed the connection (and sent nothing more)."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except ConnectionResetError:
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
