"""The model of one terminal's firmware state: seq counter, clock, records kept until ACKed.

Pure and synchronous: no sockets, no asyncio. The links (``tcp.py``, ``mqtt.py``)
read and change it; the fleet (``fleet.py``) makes presses and power losses on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from protocols import constants as c
from protocols.frames import PressRecord

POWER_ON_TIME = 946684800
"""2000-01-01T00:00:00Z: where a terminal's clock starts after it lost power (spec 6)."""

MAX_SEQ = 0xFFFFFFFF

RealTime = Callable[[], float]
"""Unix time now, as a float (``time.time`` unless a test shares a fake clock)."""


@dataclass(frozen=True, slots=True)
class MadePress:
    """One press as the terminal recorded it, with the truth the gateway cannot see.

    ``clock_offset`` is (terminal clock - real time) of the clock that stamped ``ts``:
    a frame of unsynced records reads its ``sent_at`` from that same clock.
    """

    terminal_id: int
    seq: int
    ts: int
    true_time: float
    button: int
    followup: int
    unsynced: bool
    clock_offset: float

    @property
    def clock_group(self) -> float | None:
        """Records share a PRESSES frame only within one group (spec 6).

        Synced records all carry real time; unsynced ones belong to the clock that
        stamped them (two power losses make two different unsynced clocks).
        """
        return self.clock_offset if self.unsynced else None

    def to_record(self) -> PressRecord:
        return PressRecord(self.seq, self.ts, self.button, self.followup)


class TerminalClock:
    """A terminal's clock: real time plus an offset, and whether it was set by a gateway."""

    __slots__ = ("_real_time", "offset", "synced")

    def __init__(self, real_time: RealTime, *, offset: float = 0.0, synced: bool = True) -> None:
        self._real_time = real_time
        self.offset = offset
        self.synced = synced

    def now(self) -> int:
        return self.read(self.offset)

    def read(self, offset: float) -> int:
        """What a clock with ``offset`` shows now, clamped to the u32 the wire carries."""
        return min(max(int(self._real_time() + offset), 0), MAX_SEQ)

    def set(self, gateway_time: int) -> None:
        """Take the time from a WELCOME."""
        self.offset = gateway_time - self._real_time()
        self.synced = True

    def lose(self) -> None:
        """Power is gone: the clock restarts at 2000-01-01 and is no longer synced."""
        self.offset = POWER_ON_TIME - self._real_time()
        self.synced = False


SeqReserver = Callable[["Terminal"], None]
"""Called when ``next_seq`` reaches ``seq_reserved``: must durably raise ``seq_reserved``."""


class Terminal:
    """Firmware state of one terminal. Records stay in ``pending`` until ACKed.

    ``frames`` maps first_seq to last_seq of each PRESSES frame published on MQTT
    and not ACKed yet. The firmware keeps it in flash with the records: an answer
    may come late (after a reconnect, a power loss or a restart) and names only
    the last seq of its frame, so the frame's first seq must still be known.
    """

    __slots__ = (
        "boot_count",
        "boot_time",
        "clock",
        "frames",
        "key",
        "next_seq",
        "pending",
        "real_time",
        "reserve_seqs",
        "seq_reserved",
        "terminal_id",
    )

    def __init__(
        self,
        terminal_id: int,
        key: bytes,
        *,
        real_time: RealTime = time.time,
        next_seq: int = 0,
        boot_count: int = 0,
        clock_offset: float = 0.0,
        clock_synced: bool = True,
        pending: Iterable[MadePress] = (),
        frames: Mapping[int, int] | None = None,
        reserve_seqs: SeqReserver | None = None,
    ) -> None:
        if len(key) != 16:
            raise ValueError(f"terminal {terminal_id}: key must be 16 bytes, not {len(key)}")
        self.terminal_id = terminal_id
        self.key = key
        self.real_time = real_time
        self.next_seq = next_seq
        self.boot_count = boot_count
        self.boot_time = real_time()
        self.clock = TerminalClock(real_time, offset=clock_offset, synced=clock_synced)
        self.pending: dict[int, MadePress] = {p.seq: p for p in sorted(pending, key=_seq)}
        self.frames: dict[int, int] = dict(frames or {})
        self.reserve_seqs = reserve_seqs
        self.seq_reserved = MAX_SEQ + 1

    def key_of(self, terminal_id: int) -> bytes | None:
        """Key lookup for decoding the gateway's frames: only our own id is known."""
        return self.key if terminal_id == self.terminal_id else None

    def press(self, button: int, followup: int = 0) -> MadePress:
        """Record a press now, stamped by the terminal's clock.

        Any byte goes for ``button`` and ``followup`` (to make records the gateway
        must keep but not count); values outside a byte cannot be sent at all.
        """
        if not (0 <= button <= 0xFF and 0 <= followup <= 0xFF):
            raise ValueError(f"button {button} and followup {followup} must each fit in a byte")
        if self.next_seq > MAX_SEQ:
            raise OverflowError(f"terminal {self.terminal_id} ran out of sequence numbers")
        if self.next_seq >= self.seq_reserved and self.reserve_seqs is not None:
            self.reserve_seqs(self)
        made = MadePress(
            terminal_id=self.terminal_id,
            seq=self.next_seq,
            ts=self.clock.now(),
            true_time=self.real_time(),
            button=button,
            followup=followup,
            unsynced=not self.clock.synced,
            clock_offset=self.clock.offset,
        )
        self.pending[made.seq] = made
        self.next_seq += 1
        return made

    def power_loss(self) -> None:
        """Power cut and back: the clock is lost, records and seq survive (flash)."""
        self.clock.lose()
        self.boot_count += 1
        self.boot_time = self.real_time()

    def uptime(self) -> int:
        return max(int(self.real_time() - self.boot_time), 0)

    def next_batch(self, from_seq: int, up_to_seq: int, max_records: int) -> tuple[MadePress, ...]:
        """Pending records for one PRESSES frame: the first pending seq in
        ``from_seq..up_to_seq``, then consecutive seqs of the same clock group."""
        start = next(
            (
                s
                for s in range(from_seq, min(up_to_seq, self.next_seq - 1) + 1)
                if s in self.pending
            ),
            None,
        )
        if start is None:
            return ()
        first = self.pending[start]
        batch = [first]
        seq = start + 1
        limit = min(max_records, c.MAX_RECORDS)
        while len(batch) < limit and seq <= up_to_seq:
            made = self.pending.get(seq)
            if made is None or made.clock_group != first.clock_group:
                break
            batch.append(made)
            seq += 1
        return tuple(batch)

    def acknowledge(self, first_seq: int, last_seq: int) -> list[MadePress]:
        """Drop the records an ACK covers; return those that were still pending."""
        return [
            made
            for seq in range(first_seq, last_seq + 1)
            if (made := self.pending.pop(seq, None)) is not None
        ]


def _seq(made: MadePress) -> int:
    return made.seq
