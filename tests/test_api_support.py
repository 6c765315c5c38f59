"""Shared setup of the query API tests (no tests here): a seeded store and a live server.

The store holds two companies, so scope can be checked; hand-made presses
(the vendor's 17/16/60/126 example, a misuse burst, follow-ups, an SMS hour
count), written through the stores' own API, which keeps the misuse flags
(checked against :func:`greedy_misuse`, the rule computed by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from firmware_sim.harness import free_port
from gateway.api.db import open_reader
from gateway.api.tokens import create_token, ensure_table
from gateway.registry.terminals import parse_registry
from gateway.rows import HourCountRow, PressRow
from gateway.stores import open_store

GATEWAY = str(Path(sys.executable).parent / "smiley-gateway")
SHARED_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
HOUR = 3600
MAR_1 = 1772323200  # 2026-03-01T00:00:00Z
MAR_2 = MAR_1 + 86400
HELSINKI = 7200  # UTC+2 in March
OSLO = 3600

REGISTRY_TOML = """
[[company]]
id = "acme"
name = "Acme Retail"
[[company]]
id = "globex"
name = "Globex"
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
[[location]]
id = 12
company = "acme"
name = "Tampere store"
parent = 10
timezone = "Europe/Helsinki"
[[location]]
id = 13
company = "acme"
name = "Sweden"
[[location]]
id = 14
company = "acme"
name = "Stockholm store"
parent = 13
timezone = "Europe/Stockholm"
[[location]]
id = 20
company = "globex"
name = "Globex Norway"
[[location]]
id = 21
company = "globex"
name = "Oslo office"
parent = 20
timezone = "Europe/Oslo"
[[survey]]
id = 100
company = "acme"
question = "How was your visit today?"
scale = "four"
misuse_interval_s = 5
[[survey]]
id = 101
company = "acme"
question = "How was the service?"
locale = "sv-SE"
scale = "five"
[[survey]]
id = 200
company = "globex"
question = "How was lunch?"
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
[[terminal]]
id = 1004
key = "4c8fd9e7462b06d337c9ed2fe2d7a66b"
location = 12
survey = 100
[[terminal]]
id = 1005
key = "92e6f12d686413b0d27bdbc90b6e836e"
location = 14
survey = 101
[[terminal]]
id = 2001
key = "baa0aced577d5d748767a0e00ab43f5f"
location = 21
survey = 200
"""
REGISTRY = parse_registry(tomllib.loads(REGISTRY_TOML))
MISUSE_INTERVAL = {
    t.id: REGISTRY.surveys[t.survey].misuse_interval_s for t in REGISTRY.terminals.values()
}


def press(
    terminal: int, seq: int, at: int, button: int, *, offset: int = HELSINKI, followup: int = 0,
    transport: str = "tcp", corrected: bool = False,
) -> PressRow:  # fmt: skip
    return PressRow(terminal, seq, at, offset, button, followup, corrected, transport, at * 1000)


def happy_example() -> list[PressRow]:
    """The vendor's example at Tampere on 2 March: 17/16/60/126 (Happy Index 78), a minute apart."""
    buttons = [1] * 17 + [2] * 16 + [3] * 60 + [4] * 126
    start = MAR_2 + 8 * HOUR
    return [press(1004, i, start + 60 * i, b) for i, b in enumerate(buttons)]


BURST_START = MAR_1 + 9 * HOUR  # 11:00 in Helsinki
# Terminal 1001, misuse interval 5 s: counted at +0, +6, +20; misuse at +2, +4, +8.
BURST = [(0, 4), (2, 1), (4, 1), (6, 4), (8, 1), (20, 4)]
BURST_LATE = 3  # the press at +6 arrives in a later batch, after +8 and +20


def burst() -> tuple[list[PressRow], list[PressRow]]:
    """(first batch, late batch) of the misuse burst."""
    rows = [press(1001, i, BURST_START + dt, b) for i, (dt, b) in enumerate(BURST)]
    return [r for i, r in enumerate(rows) if i != BURST_LATE], [rows[BURST_LATE]]


def other_presses() -> list[PressRow]:
    followups = [
        press(1002, i, MAR_1 + 10 * HOUR + 30 * i, 1 + i % 4, followup=(i % 3)) for i in range(12)
    ]
    stockholm = [press(1005, i, MAR_1 + 12 * HOUR + 40 * i, 1 + i % 5, offset=HELSINKI - 3600)
                 for i in range(10)]  # fmt: skip
    globex = [press(2001, i, MAR_1 + 11 * HOUR + 10 * i, 2, offset=OSLO) for i in range(7)]
    older = [press(1002, 100 + i, MAR_1 - 40 * 86400 + 3600 * i, 3) for i in range(5)]
    early = [press(1004, 500, MAR_1 - 1800, 2)]  # 01:30 on 1 March in Tampere
    return followups + stockholm + globex + older + early


SMS_HOUR = MAR_1 + 14 * HOUR  # 16:00 in Helsinki
SMS_COUNTS = [(2, 3), (4, 1)]  # (button, count) for terminal 1002 in that hour


def greedy_misuse(
    rows: list[tuple[int, int, int]], interval: dict[int, int]
) -> dict[tuple[int, int], bool]:
    """(terminal, seq, time) rows flagged as the writer flags them."""
    flags: dict[tuple[int, int], bool] = {}
    last: dict[int, int] = {}
    for terminal, seq, at in sorted(rows, key=lambda r: (r[0], r[2], r[1])):
        previous = last.get(terminal)
        misuse = previous is not None and at - previous < interval.get(terminal, 0)
        flags[(terminal, seq)] = misuse
        if not misuse:
            last[terminal] = at
    return flags


@dataclass
class Seeded:
    """A store filled with the rows above; ``url`` as [store] url takes it."""

    kind: str
    url: str
    directory: Path
    drop: str | None = None  # a throwaway PostgreSQL database to drop at the end
    tokens: dict[str, tuple[str, str, int]] = field(
        default_factory=dict
    )  # name: (client, token, id)

    def config(
        self, *, rate_limit: str = "100000/minute", port: int | None = None
    ) -> tuple[Path, int]:
        port = port or free_port()
        path = self.directory / f"api-{port}.toml"
        path.write_text(
            f'[gateway]\ndata_dir = "var"\nlog_level = "warning"\nlog_format = "json"\n'
            f'[store]\nurl = "{self.url}"\n'
            f'[api]\nlisten = "127.0.0.1:{port}"\nrate_limit = "{rate_limit}"\n',
            encoding="utf-8",
        )
        return path, port


async def seed(kind: str, directory: Path) -> Seeded:
    if kind == "sqlite":
        seeded = Seeded(kind, f"sqlite:///{directory / 'central.db'}", directory)
    else:
        name = f"api_test_{secrets.token_hex(4)}"
        conn = await asyncpg.connect(SHARED_PG)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        seeded = Seeded(kind, SHARED_PG.rsplit("/", 1)[0] + f"/{name}", directory, drop=name)
    store = await open_store(seeded.url)
    try:
        await store.import_registry(REGISTRY)
        first, late = burst()
        await store.write(happy_example() + first + other_presses(), [], sms_hours(1, SMS_COUNTS))
        await store.write(late, [])  # the store re-flags misuse for presses that come late
    finally:
        await store.close()
    db = await open_reader(seeded.url)
    try:
        await ensure_table(db)
        for name, company, scope in (
            ("acme", "acme", None), ("finland", "acme", 10), ("helsinki", "acme", 11),
            ("globex", "globex", None), ("revoked", "acme", None), ("expired", "acme", None),
        ):  # fmt: skip
            expires = int(time.time()) - 10 if name == "expired" else None
            info, token = await create_token(db, company, scope, name, expires)
            seeded.tokens[name] = (info.client_id, token, info.id)
        await db.execute("UPDATE api_token SET revoked_at = 1 WHERE name = 'revoked'")
    finally:
        await db.close()
    return seeded


def all_presses() -> list[PressRow]:
    first, late = burst()
    return happy_example() + first + other_presses() + late


def sms_hours(batch_seq: int, counts: list[tuple[int, int]]) -> list[HourCountRow]:
    """An SMS batch's counts of SMS_HOUR, as the outbox forwards them."""
    return [
        HourCountRow(1002, SMS_HOUR, HELSINKI, button, n, batch_seq, "sms", SMS_HOUR * 1000 + 5000)
        for button, n in counts
    ]


_later_batches = itertools.count(2)


async def set_sms_count(seeded: Seeded, button: int, count: int) -> None:
    """A later SMS batch replacing one hour count."""
    store = await open_store(seeded.url)
    try:
        await store.write([], [], sms_hours(next(_later_batches), [(button, count)]))
    finally:
        await store.close()


async def drop(seeded: Seeded) -> None:
    if seeded.drop is None:
        return
    conn = await asyncpg.connect(SHARED_PG)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {seeded.drop} WITH (FORCE)")
    finally:
        await conn.close()


def shared_postgres_available() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False


@dataclass
class ApiProcess:
    """``smiley-gateway api --config FILE``, as an operator starts it."""

    config: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.config.parent / f"api-{self.port}.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [GATEWAY, "api", "--config", str(self.config)], stdout=log, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.config.parent / f"api-{self.port}.log").read_text())
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.base}/openapi.json", timeout=1)
                return
            time.sleep(0.05)
        raise RuntimeError("the API did not start listening")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@contextlib.contextmanager
def running(seeded: Seeded, **kwargs: Any) -> Iterator[ApiProcess]:
    config, port = seeded.config(**kwargs)
    server = ApiProcess(config, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def seed_sync(kind: str, directory: Path) -> Seeded:
    return asyncio.run(seed(kind, directory))


def drop_sync(seeded: Seeded) -> None:
    asyncio.run(drop(seeded))
