"""The fleet's state file: what a terminal keeps in flash, across runs of the simulator.

One JSON file per fleet, replaced atomically (write a temporary file, fsync,
rename). Writes are batched: the fleet saves at most once per flush interval, and
never per press. Sequence numbers must never be used twice, even when the
simulator dies between two saves, so they are handed out in reserved blocks: the
file always holds ``seq_reserved``, a seq no press has reached yet, and a run that
finds the file not closed cleanly starts from there (a gap, never a reuse).

Layout::

    {"format": 1, "clean": false,
     "terminals": {"1001": {"next_seq": 12, "seq_reserved": 1036, "boot_count": 3,
                            "clock_offset": 0.0, "clock_synced": true,
                            "pending": [[seq, ts, true_time, button, followup,
                                         unsynced, clock_offset], ...],
                            "frames": [[first_seq, last_seq], ...]}}}

``frames`` (MQTT frames published and not ACKed; see ``Terminal``) may be absent.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.errors import StateError
from firmware_sim.terminal import MadePress, Terminal

FORMAT = 1


@dataclass(frozen=True, slots=True)
class SavedTerminal:
    """A terminal as the state file remembers it."""

    next_seq: int
    boot_count: int
    clock_offset: float
    clock_synced: bool
    pending: tuple[MadePress, ...]
    frames: tuple[tuple[int, int], ...] = ()


class StateStore:
    """Reads and atomically replaces one fleet's state file; keeps unknown terminals as found."""

    def __init__(self, path: Path, *, seq_block: int = 1024) -> None:
        if seq_block < 1:
            raise ValueError("seq_block must be at least 1")
        self.path = path
        self.seq_block = seq_block
        self._others: dict[str, Any] = {}
        self._terminals: list[Terminal] = []
        self._write_lock = threading.Lock()
        self._generation = 0
        self._written_generation = 0

    def load(self) -> dict[int, SavedTerminal]:
        """Terminals saved before; an unclean file resumes each seq at its reservation."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise StateError(f"{self.path}: unknown format {data.get('format')!r}")
            clean = bool(data.get("clean", False))
            saved = {
                int(tid): _saved_terminal(int(tid), entry, clean=clean)
                for tid, entry in data["terminals"].items()
            }
            self._others = dict(data["terminals"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{self.path} is not a fleet state file: {exc}") from exc
        return saved

    def attach(self, terminals: Iterable[Terminal]) -> None:
        """Keep these terminals in the file; each reserves its next seq block through us."""
        self._terminals = list(terminals)
        for terminal in self._terminals:
            terminal.reserve_seqs = self.reserve

    def snapshot(self, *, clean: bool = False) -> tuple[int, bytes]:
        """The file's next content, numbered so an older snapshot never replaces a newer one."""
        entries = dict(self._others)
        for terminal in self._terminals:
            entries[str(terminal.terminal_id)] = _entry(terminal)
        self._generation += 1
        body = {"format": FORMAT, "clean": clean, "terminals": entries}
        return self._generation, json.dumps(body, separators=(",", ":")).encode()

    def write(self, generation: int, content: bytes) -> None:
        """Atomically replace the file with ``content`` unless a newer snapshot is written.

        Safe to call from a worker thread.
        """
        with self._write_lock:
            if generation <= self._written_generation:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(content)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_directory(self.path.parent)
            self._written_generation = generation

    def reserve(self, terminal: Terminal) -> None:
        """Raise ``terminal``'s ``seq_reserved`` a block ahead and save now (blocking, rare)."""
        terminal.seq_reserved = terminal.next_seq + self.seq_block
        self.write(*self.snapshot())

    def reserve_all(self) -> None:
        """Start of a run: reserve a block for every attached terminal and save now."""
        for terminal in self._terminals:
            terminal.seq_reserved = terminal.next_seq + self.seq_block
        self.write(*self.snapshot())


def _entry(terminal: Terminal) -> dict[str, Any]:
    return {
        "next_seq": terminal.next_seq,
        "seq_reserved": max(terminal.seq_reserved, terminal.next_seq),
        "boot_count": terminal.boot_count,
        "clock_offset": terminal.clock.offset,
        "clock_synced": terminal.clock.synced,
        "pending": [
            [p.seq, p.ts, p.true_time, p.button, p.followup, p.unsynced, p.clock_offset]
            for p in terminal.pending.values()
        ],
        "frames": [[first, last] for first, last in sorted(terminal.frames.items())],
    }


def _saved_terminal(terminal_id: int, entry: dict[str, Any], *, clean: bool) -> SavedTerminal:
    pending = tuple(
        MadePress(
            terminal_id=terminal_id,
            seq=int(seq),
            ts=int(ts),
            true_time=float(true_time),
            button=int(button),
            followup=int(followup),
            unsynced=bool(unsynced),
            clock_offset=float(offset),
        )
        for seq, ts, true_time, button, followup, unsynced, offset in entry["pending"]
    )
    next_seq = int(entry["next_seq"] if clean else entry["seq_reserved"])
    if pending and max(p.seq for p in pending) >= next_seq:
        raise ValueError(f"terminal {terminal_id}: a pending seq is not below next_seq {next_seq}")
    return SavedTerminal(
        next_seq=next_seq,
        boot_count=int(entry["boot_count"]),
        clock_offset=float(entry["clock_offset"]),
        clock_synced=bool(entry["clock_synced"]),
        pending=pending,
        frames=tuple((int(first), int(last)) for first, last in entry.get("frames", ())),
    )


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
