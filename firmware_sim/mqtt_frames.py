"""The PRESSES frames an MQTT terminal has open: published (or about to be), not ACKed.

MQTT may deliver an answer after a reconnect (it waited in the session) or answer
one publish of a frame twice, so answers match open frames by seq, not by order:
an ACK names the last seq of its frame, a NAK the first. The open frames live in
``Terminal.frames`` (flash) with their records: they keep their boundaries across
reconnects, power losses and runs, so a late ACK names exactly the records the
gateway committed.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from firmware_sim.terminal import MAX_SEQ, MadePress, Terminal
from protocols import constants as c

REMEMBERED_ACKS = 256
"""Frames ACKed lately, kept (last seq to size) to tell a duplicate ACK from a stray one."""


@dataclass(slots=True)
class OpenFrame:
    """A PRESSES frame published (or about to be) and not ACKed: its records stay pending."""

    first: int
    last: int
    attempts: int = 0
    """Publishes so far (a restored frame counts as published once)."""
    connection: int = 0
    """The connection of the last publish (0: none of this run's)."""
    published_at: float = -math.inf
    due: float = 0.0
    """When to publish it (again), loop time."""
    delivered: bool = False
    """The broker acknowledged the last publish (PUBACK)."""

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class OpenFrames:
    """The open frames of one terminal, by first seq, and where new records start."""

    def __init__(self, terminal: Terminal, on_change: Callable[[], None]) -> None:
        self._terminal = terminal
        self._on_change = on_change
        self._by_first: dict[int, OpenFrame] = {}
        self._first_of: dict[int, int] = {}
        """First seq of an open frame by its last seq (what an ACK names)."""
        self._acked: OrderedDict[int, int] = OrderedDict()
        self._cursor = 0
        """Every pending record from here up is in no frame yet; all below are in one."""
        self._restore()

    def __len__(self) -> int:
        return len(self._by_first)

    def __iter__(self) -> Iterator[OpenFrame]:
        return iter(self._by_first.values())

    def named_by_nak(self, ref_seq: int) -> OpenFrame | None:
        return self._by_first.get(ref_seq)

    def close(self, acked_seq: int) -> OpenFrame | None:
        """The open frame an ACK of ``acked_seq`` answers, now closed; None if none is open."""
        first = self._first_of.pop(acked_seq, None)
        if first is None:
            return None
        frame = self._by_first.pop(first)
        self._terminal.frames.pop(first, None)
        self._acked[frame.last] = frame.count
        while len(self._acked) > REMEMBERED_ACKS:
            self._acked.popitem(last=False)
        return frame

    def acked_lately(self, acked_seq: int) -> int | None:
        """The size of a frame closed lately by an ACK of ``acked_seq`` (a duplicate ACK)."""
        return self._acked.get(acked_seq)

    def earliest_due(self) -> float | None:
        return min((frame.due for frame in self), default=None)

    def next_due(self, now: float) -> tuple[OpenFrame, tuple[MadePress, ...]] | None:
        """The open frame due at ``now`` with the lowest seq, and its records."""
        due = [frame for frame in self if frame.due <= now]
        if not due:
            return None
        frame = min(due, key=_first_seq)
        pending = self._terminal.pending
        return frame, tuple(pending[seq] for seq in range(frame.first, frame.last + 1))

    def open_next(self, max_records: int) -> tuple[OpenFrame, tuple[MadePress, ...]] | None:
        """A new frame of the lowest records in no frame yet, or None when there are none."""
        terminal = self._terminal
        batch = terminal.next_batch(self._cursor, MAX_SEQ, max_records)
        if not batch:
            self._cursor = max(self._cursor, terminal.next_seq)
            return None
        self._cursor = batch[-1].seq + 1
        return self._open(batch[0].seq, batch[-1].seq), batch

    def _open(self, first: int, last: int) -> OpenFrame:
        frame = OpenFrame(first, last)
        self._by_first[first] = frame
        self._first_of[last] = first
        self._terminal.frames[first] = last
        self._on_change()
        return frame

    def _restore(self) -> None:
        """Take the open frames saved with the records; drop any that no longer fit them.

        A frame fits when all its records are pending, of one clock group, in no other
        frame, and below every pending record that is in no frame (the cursor's rule).
        """
        terminal = self._terminal
        pending = terminal.pending
        kept: list[tuple[int, int]] = []
        covered: set[int] = set()
        for first, last in sorted(terminal.frames.items()):
            seqs = range(first, last + 1)
            if not 1 <= len(seqs) <= c.MAX_RECORDS or any(
                seq not in pending or seq in covered for seq in seqs
            ):
                continue
            if len({pending[seq].clock_group for seq in seqs}) != 1:
                continue
            kept.append((first, last))
            covered.update(seqs)
        lowest_free = min((seq for seq in pending if seq not in covered), default=None)
        if lowest_free is not None:
            kept = [(first, last) for first, last in kept if last < lowest_free]
        terminal.frames.clear()
        for first, last in kept:
            frame = self._open(first, last)
            frame.attempts = 1  # published in an earlier run: never a clock source
        if lowest_free is not None:
            self._cursor = lowest_free
        else:
            self._cursor = max((last + 1 for _, last in kept), default=terminal.next_seq)


def _first_seq(frame: OpenFrame) -> int:
    return frame.first
