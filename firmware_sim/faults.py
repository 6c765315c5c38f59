"""Faults a terminal can be made to suffer, by probability, by schedule, or on demand.

Frame faults act on the next frame a terminal writes:

- ``SPLIT_WRITE``: the frame goes out one byte per write.
- ``GARBAGE``: bytes that cannot start a frame follow the frame (never HELLO);
  the gateway closes the connection (bad magic), the terminal reconnects and resends.
- ``CORRUPT_CRC``: a PRESSES frame with a wrong crc; the gateway NAKs BAD_CRC.
- ``DROP``: the connection is aborted right after the frame.
- ``DROP_MID_FRAME``: the connection is aborted after part of the frame.

``POWER_LOSS`` acts on the terminal itself (see ``Terminal.power_loss``).

On MQTT (``mqtt.py``) the broker carries whole messages: ``SPLIT_WRITE`` does not
apply and is ignored; ``GARBAGE`` is a message of random bytes after the frame (the
gateway quarantines it and answers nothing); ``DROP`` cuts the connection without
DISCONNECT after the broker took the frame, ``DROP_MID_FRAME`` before it got out.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from protocols.constants import FrameType


class Fault(enum.Enum):
    SPLIT_WRITE = "split_write"
    GARBAGE = "garbage"
    CORRUPT_CRC = "corrupt_crc"
    DROP = "drop"
    DROP_MID_FRAME = "drop_mid_frame"
    POWER_LOSS = "power_loss"


FRAME_FAULTS = frozenset(Fault) - {Fault.POWER_LOSS}
MAX_INJECTED = 64


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """``fault`` at ``at`` seconds after ``Fleet.run`` starts, on one terminal or all."""

    at: float
    fault: Fault
    terminal_id: int | None = None

    @classmethod
    def parse(cls, spec: str) -> ScheduledFault:
        """From ``SECONDS:FAULT`` or ``SECONDS:FAULT:TERMINAL_ID`` (CLI form)."""
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"scheduled fault {spec!r} is not SECONDS:FAULT[:TERMINAL_ID]")
        try:
            fault = Fault(parts[1].strip())
        except ValueError:
            known = ", ".join(f.value for f in Fault)
            raise ValueError(f"unknown fault {parts[1]!r}; known: {known}") from None
        try:
            at = float(parts[0])
            terminal_id = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError(f"scheduled fault {spec!r}: bad number") from None
        if at < 0:
            raise ValueError(f"scheduled fault {spec!r}: time cannot be negative")
        return cls(at, fault, terminal_id)


@dataclass(frozen=True, slots=True)
class FaultOptions:
    """Probabilities (per frame written; per press for power loss) and a schedule.

    ``drop`` aborts the connection after a frame; ``mid_frame_share`` of those
    drops cut the frame itself short.
    """

    split_write: float = 0.0
    garbage: float = 0.0
    corrupt_crc: float = 0.0
    drop: float = 0.0
    mid_frame_share: float = 0.5
    power_loss: float = 0.0
    schedule: tuple[ScheduledFault, ...] = ()

    def __post_init__(self) -> None:
        for name in ("split_write", "garbage", "corrupt_crc", "drop", "mid_frame_share"):
            _check_probability(name, getattr(self, name))
        _check_probability("power_loss", self.power_loss)

    @classmethod
    def parse(cls, spec: str) -> FaultOptions:
        """From ``split=0.1,garbage=0.01,crc=0.05,drop=0.02,power=0.001`` (CLI form)."""
        names = {
            "split": "split_write",
            "split_write": "split_write",
            "garbage": "garbage",
            "crc": "corrupt_crc",
            "corrupt_crc": "corrupt_crc",
            "drop": "drop",
            "mid_frame": "mid_frame_share",
            "mid_frame_share": "mid_frame_share",
            "power": "power_loss",
            "power_loss": "power_loss",
        }
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, value = item.partition("=")
            field = names.get(name.strip())
            if not sep or field is None:
                raise ValueError(f"unknown fault {item!r}; known: {', '.join(sorted(names))}")
            try:
                values[field] = float(value)
            except ValueError:
                raise ValueError(f"fault {name!r}: {value!r} is not a number") from None
        return dataclasses.replace(cls(), **values)

    @property
    def any_frame_fault(self) -> bool:
        return any((self.split_write, self.garbage, self.corrupt_crc, self.drop))


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability, 0..1, not {value}")


def _fits(fault: Fault, kind: FrameType) -> bool:
    """CORRUPT_CRC needs a PRESSES frame (to be NAKed BAD_CRC and resent); GARBAGE
    waits for a frame after HELLO (the session's receiver sees the gateway close)."""
    if fault is Fault.CORRUPT_CRC:
        return kind is FrameType.PRESSES
    if fault is Fault.GARBAGE:
        return kind is not FrameType.HELLO
    return True


class FaultPlanner:
    """Decides the faults of each frame one terminal writes: injected ones first, then dice."""

    __slots__ = ("_injected", "_options", "_rng")

    def __init__(self, options: FaultOptions, rng: random.Random) -> None:
        self._options = options
        self._rng = rng
        self._injected: deque[Fault] = deque()

    def inject(self, fault: Fault) -> None:
        """Apply ``fault`` to the next frame it fits (see ``_fits``)."""
        if fault not in FRAME_FAULTS:
            raise ValueError(f"{fault} is not a frame fault")
        if len(self._injected) >= MAX_INJECTED:
            raise OverflowError(f"more than {MAX_INJECTED} faults are waiting for frames")
        self._injected.append(fault)

    def for_frame(self, kind: FrameType) -> frozenset[Fault]:
        chosen = set()
        for fault in list(self._injected):
            if _fits(fault, kind):
                chosen.add(fault)
                self._injected.remove(fault)
        options = self._options
        if not options.any_frame_fault:
            return frozenset(chosen)
        roll = self._rng.random
        if roll() < options.split_write:
            chosen.add(Fault.SPLIT_WRITE)
        if kind is FrameType.PRESSES and roll() < options.corrupt_crc:
            chosen.add(Fault.CORRUPT_CRC)
        if kind is not FrameType.HELLO and roll() < options.garbage:
            chosen.add(Fault.GARBAGE)
        if roll() < options.drop:
            chosen.add(Fault.DROP_MID_FRAME if roll() < options.mid_frame_share else Fault.DROP)
        return frozenset(chosen)

    def garbage(self) -> bytes:
        """1..16 bytes whose first cannot start a frame (not ``S``)."""
        size = self._rng.randint(1, 16)
        first = self._rng.choice([b for b in range(256) if b != ord("S")])
        return bytes([first]) + self._rng.randbytes(size - 1)

    def cut(self, frame_size: int) -> int:
        """Where a mid-frame drop cuts a frame: 1 .. frame_size - 1 bytes get out."""
        return self._rng.randint(1, frame_size - 1)

    def power_loss_after_press(self) -> bool:
        return self._options.power_loss > 0 and self._rng.random() < self._options.power_loss
