"""The benchmarks' terminals and their PRESSES frames, all encoded before the clock starts."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from protocols.frames import Hello, Presses, PressRecord, encode

TIMEZONE = "Europe/Helsinki"
FIRST_TERMINAL_ID = 100_001


@dataclass(frozen=True, slots=True)
class TerminalSpec:
    terminal_id: int
    key: bytes


@dataclass(frozen=True, slots=True)
class PlannedFrame:
    """A PRESSES frame and its bytes, encoded before the clock starts."""

    frame: Presses
    data: bytes

    @property
    def last_seq(self) -> int:
        return self.frame.last_seq

    @property
    def records(self) -> tuple[PressRecord, ...]:
        return self.frame.records


def make_fleet(size: int) -> tuple[TerminalSpec, ...]:
    return tuple(TerminalSpec(FIRST_TERMINAL_ID + i, secrets.token_bytes(16)) for i in range(size))


def registry_toml(fleet: Sequence[TerminalSpec]) -> str:
    head = f"""
[[company]]
id = "bench"
name = "Bench Retail"
[[location]]
id = 1
company = "bench"
name = "Bench store"
timezone = "{TIMEZONE}"
[[survey]]
id = 1
company = "bench"
question = "How was your visit today?"
"""
    terminals = (
        f'[[terminal]]\nid = {t.terminal_id}\nkey = "{t.key.hex()}"\nlocation = 1\nsurvey = 1\n'
        for t in fleet
    )
    return head + "".join(terminals)


class FrameShape(Protocol):
    """What plan_frames needs of a benchmark's options."""

    @property
    def records_per_frame(self) -> int: ...

    @property
    def frames_per_terminal(self) -> int: ...


def plan_frames(
    spec: TerminalSpec, options: FrameShape, rng: random.Random, now: int
) -> tuple[PlannedFrame, ...]:
    """Every PRESSES frame of one terminal, seqs from 0, all stamped in the past."""
    per_frame = options.records_per_frame
    total = per_frame * options.frames_per_terminal
    first_ts = now - 1 - total  # one press a second, all in the past
    frames = []
    for index in range(options.frames_per_terminal):
        first_seq = index * per_frame
        records = tuple(
            PressRecord(seq, first_ts + seq, rng.randint(1, 4), rng.choice((0, 0, 1, 2)))
            for seq in range(first_seq, first_seq + per_frame)
        )
        frame = Presses(spec.terminal_id, now, first_seq, 0, records)
        frames.append(PlannedFrame(frame, encode(frame, spec.key)))
    return tuple(frames)


def plan_fleet(
    fleet: Sequence[TerminalSpec], options: FrameShape, seed: int
) -> tuple[dict[int, tuple[PlannedFrame, ...]], float]:
    """Every terminal's frames by id, and the seconds it took to encode them."""
    rng = random.Random(seed)
    started = time.perf_counter()
    now = int(time.time())
    plans = {s.terminal_id: plan_frames(s, options, rng, now) for s in fleet}
    return plans, time.perf_counter() - started


def hello(spec: TerminalSpec, queued: int) -> Hello:
    return Hello(spec.terminal_id, 0x0100, 1, int(time.time()), 0, min(queued, 0xFFFF))
