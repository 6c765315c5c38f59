"""What the simulated SMS terminals sent (:class:`SmsReport`, the independent count a
test compares the gateway's store with), and the fleet's state file (batch_seq per
terminal, saved before a batch goes out: a gap, never a reuse)."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.errors import StateError
from protocols.frames import Hourly

HOUR = 3600
STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class SentBatch:
    """One HOURLY frame as sent, with the PDUs that carried it (in delivery order)."""

    frame: Hourly
    sent_at: int
    pdus: tuple[str, ...]
    copies: int


class SmsReport:
    """What the SMS terminals sent, and what the gateway must end up with."""

    def __init__(self) -> None:
        self.batches: list[SentBatch] = []
        self.expected: dict[tuple[int, int], tuple[int, tuple[int, int, int, int]]] = {}
        """(terminal_id, hour_start) -> (batch_seq, counts) of the highest batch_seq."""
        self.pressed: Counter[tuple[int, int]] = Counter()
        """(terminal_id, hour_start) -> presses made (sent or not)."""
        self.pdus_delivered = 0
        self.duplicates = 0
        self.notices: list[tuple[str, str]] = []
        """(sender, text) of every non-frame message sent; the gateway must quarantine them."""

    def sent(self, batch: SentBatch) -> None:
        self.batches.append(batch)
        frame = batch.frame
        for i, counts in enumerate(frame.counts):
            key = (frame.terminal_id, frame.hour_start + i * HOUR)
            seen = self.expected.get(key)
            if seen is None or seen[0] < frame.batch_seq:
                self.expected[key] = (frame.batch_seq, counts)
        self.pdus_delivered += len(batch.pdus) * batch.copies
        self.duplicates += batch.copies - 1

    def expected_counts(self) -> dict[tuple[int, int], tuple[int, int, int, int]]:
        """(terminal_id, hour_start) -> counts of buttons 1..4 the gateway must store."""
        return {key: counts for key, (_, counts) in self.expected.items()}

    def summary(self) -> dict[str, Any]:
        frames = Counter(len(b.pdus) for b in self.batches)
        return {
            "batches": len(self.batches),
            "pdus_delivered": self.pdus_delivered,
            "duplicate_batches": self.duplicates,
            "parts_per_batch": {str(k): v for k, v in sorted(frames.items())},
            "hours_expected": len(self.expected),
            "presses_sent": sum(sum(counts) for _, counts in self.expected.values()),
            "presses_made": sum(self.pressed.values()),
            "notices": len(self.notices),
            "expected": {
                f"{tid}:{hour}": list(counts)
                for (tid, hour), counts in sorted(self.expected_counts().items())
            },
        }


def save_state(path: Path, next_batch_seqs: Mapping[int, int]) -> None:
    """Write terminal id -> next batch_seq atomically (temporary file, fsync, rename)."""
    body = {
        "format": STATE_FORMAT,
        "terminals": {str(tid): {"next_batch_seq": seq} for tid, seq in next_batch_seqs.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path | None) -> dict[int, int]:
    """Terminal id to next batch_seq from the state file (empty if there is none)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    try:
        if data.get("format") != STATE_FORMAT:
            raise StateError(f"{path}: unknown format {data.get('format')!r}")
        return {int(k): int(v["next_batch_seq"]) for k, v in data["terminals"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"{path} is not an SMS fleet state file: {exc}") from exc
