"""What the simulated terminals did: records made, sent, ACKed; NAKs, faults, reconnects.

``FleetReport.acked`` maps (terminal_id, seq) to the record as made, so a test can
compare the gateway's store with it exactly; ``MadePress.true_time`` is when the
press really happened, to check the gateway's clock correction (spec section 6).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from firmware_sim.errors import NotAllAcked, TerminalStopped
from firmware_sim.terminal import MadePress

MAX_NOTES = 100
"""Firmware bugs and gateway errors kept verbatim per terminal; all are counted."""


class TerminalReport:
    """The live tally of one terminal. Only the simulator writes it."""

    def __init__(self, terminal_id: int, on_progress: Callable[[], None]) -> None:
        self.terminal_id = terminal_id
        self.records: dict[int, MadePress] = {}
        """Every record this run is responsible for: made now, or restored from the state file."""
        self.restored: set[int] = set()
        self.acked: dict[int, MadePress] = {}
        self.sends: Counter[int] = Counter()
        """How often each seq went out in a PRESSES frame (resends count)."""
        self.records_sent = 0
        self.frames_sent: Counter[str] = Counter()
        self.naks: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.session_ends: Counter[str] = Counter()
        self.connects = 0
        self.connect_failures = 0
        self.sessions = 0
        self.power_losses = 0
        self.duplicate_acks = 0
        self.republishes = 0
        """MQTT: frames published again after no answer in time, a NAK or a reconnect."""
        self.unmatched_answers = 0
        """MQTT: ACKs and NAKs that name no frame this terminal knows (late, or stale)."""
        self.max_in_flight = 0
        self.gateway_ahead = 0
        """WELCOMEs whose next_seq was above this terminal's next seq (state lost?)."""
        self.firmware_bugs: list[str] = []
        self.firmware_bug_count = 0
        self.gateway_errors: list[str] = []
        self.gateway_error_count = 0
        self.stopped: str | None = None
        self._on_progress = on_progress

    # ------------------------------------------------------------ written by the simulator

    def made(self, press: MadePress, *, restored: bool = False) -> None:
        self.records[press.seq] = press
        if restored:
            self.restored.add(press.seq)

    def sent(self, kind: str, records: Iterable[MadePress] = (), in_flight: int = 0) -> None:
        self.frames_sent[kind] += 1
        for record in records:
            self.sends[record.seq] += 1
            self.records_sent += 1
        self.max_in_flight = max(self.max_in_flight, in_flight)

    def acked_records(self, records: Iterable[MadePress], covered: int) -> None:
        """An ACK covered ``covered`` seqs; ``records`` are those that were still pending."""
        count = 0
        for record in records:
            count += 1
            self.acked[record.seq] = record
        self.duplicate_acks += covered - count
        self._on_progress()

    def firmware_bug(self, note: str) -> None:
        self.firmware_bug_count += 1
        if len(self.firmware_bugs) < MAX_NOTES:
            self.firmware_bugs.append(note)

    def gateway_error(self, note: str) -> None:
        self.gateway_error_count += 1
        if len(self.gateway_errors) < MAX_NOTES:
            self.gateway_errors.append(note)

    def stop(self, reason: str) -> None:
        self.stopped = reason
        self._on_progress()

    # ------------------------------------------------------------ read by tests and the CLI

    @property
    def outstanding(self) -> int:
        """Records made (or restored) and not ACKed yet."""
        return len(self.records) - len(self.acked)

    @property
    def reconnects(self) -> int:
        return max(self.connects - 1, 0)

    def counts(self) -> dict[str, Any]:
        return {
            "made": len(self.records) - len(self.restored),
            "restored": len(self.restored),
            "acked": len(self.acked),
            "outstanding": self.outstanding,
            "records_sent": self.records_sent,
            "frames_sent": dict(self.frames_sent),
            "naks": dict(self.naks),
            "faults": dict(self.faults),
            "connects": self.connects,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "sessions": self.sessions,
            "session_ends": dict(self.session_ends),
            "power_losses": self.power_losses,
            "duplicate_acks": self.duplicate_acks,
            "republishes": self.republishes,
            "unmatched_answers": self.unmatched_answers,
            "max_in_flight": self.max_in_flight,
            "gateway_ahead": self.gateway_ahead,
            "firmware_bugs": self.firmware_bug_count,
            "gateway_errors": self.gateway_error_count,
            "stopped": self.stopped,
        }

    def summary(self, *, include_records: bool = False) -> dict[str, Any]:
        out = self.counts()
        out["firmware_bug_notes"] = list(self.firmware_bugs)
        out["gateway_error_notes"] = list(self.gateway_errors)
        if include_records:
            out["records"] = {
                str(seq): {
                    "ts": p.ts,
                    "true_time": p.true_time,
                    "button": p.button,
                    "followup": p.followup,
                    "unsynced": p.unsynced,
                    "acked": seq in self.acked,
                    "sends": self.sends[seq],
                }
                for seq, p in sorted(self.records.items())
            }
        return out


class FleetReport:
    """The tallies of every terminal of a fleet, and a way to wait for every ACK."""

    def __init__(self, terminal_ids: Iterable[int]) -> None:
        self._progress = asyncio.Event()
        self.terminals: dict[int, TerminalReport] = {
            tid: TerminalReport(tid, self._progress.set) for tid in terminal_ids
        }

    def __getitem__(self, terminal_id: int) -> TerminalReport:
        return self.terminals[terminal_id]

    @property
    def made(self) -> dict[tuple[int, int], MadePress]:
        """(terminal_id, seq) of every record made or restored, to the record."""
        return {(t, s): p for t, r in self.terminals.items() for s, p in r.records.items()}

    @property
    def acked(self) -> dict[tuple[int, int], MadePress]:
        """(terminal_id, seq) of every ACKed record, to the record: the gateway's store
        must hold exactly these (plus what earlier runs delivered)."""
        return {(t, s): p for t, r in self.terminals.items() for s, p in r.acked.items()}

    @property
    def made_count(self) -> int:
        """How many records were made or restored (cheap; ``made`` builds a dict)."""
        return sum(len(r.records) for r in self.terminals.values())

    @property
    def acked_count(self) -> int:
        """How many records were ACKed (cheap; ``acked`` builds a dict)."""
        return sum(len(r.acked) for r in self.terminals.values())

    def outstanding(self) -> dict[int, int]:
        """Terminal id to records not ACKed yet, for terminals that have any."""
        return {t: r.outstanding for t, r in self.terminals.items() if r.outstanding}

    def all_acked(self) -> bool:
        return all(r.outstanding == 0 for r in self.terminals.values())

    async def wait_all_acked(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """Return once every record made so far is ACKed.

        Raises ``NotAllAcked`` (a TimeoutError) after ``timeout`` seconds, and
        ``TerminalStopped`` at once if a terminal with records not ACKed has stopped.
        """
        await self.wait_for(self.all_acked, timeout)

    async def wait_acked(self, at_least: int, timeout: float | None) -> None:  # noqa: ASYNC109
        """Return once at least ``at_least`` records fleet-wide are ACKed (same errors)."""
        await self.wait_for(lambda: self.acked_count >= at_least, timeout)

    async def wait_for(self, done: Callable[[], bool], timeout: float | None) -> None:  # noqa: ASYNC109
        """Return once ``done()`` holds, re-checked after every ACK (duplicates too) or
        stop, without polling (same errors as ``wait_all_acked``)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._progress.clear()
                    if done():
                        return
                    for report in self.terminals.values():
                        if report.stopped is not None and report.outstanding:
                            raise TerminalStopped(report.terminal_id, report.outstanding)
                    await self._progress.wait()
        except TimeoutError as exc:
            outstanding = self.outstanding()
            raise NotAllAcked(sum(outstanding.values()), outstanding) from exc

    def totals(self) -> dict[str, Any]:
        total: Counter[str] = Counter()
        frames: Counter[str] = Counter()
        naks: Counter[str] = Counter()
        faults: Counter[str] = Counter()
        for report in self.terminals.values():
            counts = report.counts()
            for name, value in counts.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    total[name] += value
            frames.update(report.frames_sent)
            naks.update(report.naks)
            faults.update(report.faults)
        total["max_in_flight"] = max((r.max_in_flight for r in self.terminals.values()), default=0)
        return {
            "terminals": len(self.terminals),
            "stopped": sorted(t for t, r in self.terminals.items() if r.stopped),
            **dict(total),
            "frames_sent": dict(frames),
            "naks": dict(naks),
            "faults": dict(faults),
        }

    def summary(self, *, include_records: bool = False) -> dict[str, Any]:
        """Everything as JSON-serialisable data."""
        return {
            "all_acked": self.all_acked(),
            "totals": self.totals(),
            "terminals": {
                str(tid): r.summary(include_records=include_records)
                for tid, r in sorted(self.terminals.items())
            },
        }

    def live_line(self, elapsed: float) -> str:
        """One line for a progress display."""
        t = self.totals()
        naks = sum(t["naks"].values())
        return (
            f"{elapsed:7.1f}s terminals={t['terminals']} made={t['made']}"
            f" acked={t['acked']} outstanding={t['outstanding']} sent={t['records_sent']}"
            f" naks={naks} reconnects={t['reconnects']} faults={sum(t['faults'].values())}"
            f" stopped={len(t['stopped'])}"
        )
