"""Reading the gateway's central store and outbox after a load: did exactly the ACKed arrive?"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from bench import procs
from bench.results import StoreCheck, TerminalRun
from firmware_sim.harness import GatewayProcess

FORWARD_TIMEOUT_S = 60.0


def open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)


def count_rows(path: Path, table: str) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(open_readonly(path)) as db:
        row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


async def wait_forwarded(gateway: GatewayProcess, expected: int, last_ack: float) -> float | None:
    """Seconds after the last ACK until the store holds ``expected`` presses; None: never."""
    deadline = time.monotonic() + FORWARD_TIMEOUT_S
    while time.monotonic() < deadline and gateway.alive:
        if count_rows(procs.central_db(gateway), "press") >= expected:
            return time.perf_counter() - last_ack
        await asyncio.sleep(0.1)
    return None


def store_mismatches(path: Path, runs: Sequence[TerminalRun]) -> tuple[str, ...]:
    """Terminals whose stored presses are not exactly seqs 0 .. ACKed - 1."""
    with contextlib.closing(open_readonly(path)) as db:
        stored = {
            tid: (count, low, high)
            for tid, count, low, high in db.execute(
                "SELECT terminal_id, count(*), min(seq), max(seq) FROM press GROUP BY terminal_id"
            )
        }
    problems = []
    for run in runs:
        expected = (run.acked_presses, 0, run.acked_presses - 1) if run.acked_presses else None
        found = stored.pop(run.terminal_id, None)
        if found != expected:
            problems.append(f"terminal {run.terminal_id}: stored {found}, ACKed {expected}")
    problems.extend(f"terminal {tid}: stored {found}, never sent" for tid, found in stored.items())
    return tuple(problems)


def check_store(
    gateway: GatewayProcess,
    runs: Sequence[TerminalRun],
    lag: float | None,
    exit_code: int | None,
) -> StoreCheck:
    """After the gateway stopped: the central store against the ACKs, and the outbox left."""
    mismatches = store_mismatches(procs.central_db(gateway), runs)
    return StoreCheck(
        central_presses=count_rows(procs.central_db(gateway), "press"),
        forwarded_after_last_ack_s=lag,
        outbox_left=count_rows(procs.outbox_db(gateway), "press"),
        exact=not mismatches,
        mismatched_terminals=mismatches,
        gateway_exit=exit_code,
    )
