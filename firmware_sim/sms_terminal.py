"""Simulated SMS terminals: presses counted per hour, sent as HOURLY frames by SMS to a
simulated modem (spec sections 3 HOURLY and 4 SMS).

Time is simulated (``SmsFleet.now``, Unix seconds) so a day of batches takes a
second; the modem only sees the PDUs, stamped with that time::

    async with SocketModemServer(ModemProfile.preset("huawei")) as modem:
        fleet = SmsFleet(keys, modem.deliver, SmsFleetOptions(seed=1))
        fleet.advance(hours=30)                   # or: await fleet.run(hours=30, speed=3600)
        fleet.report.expected_counts()            # (terminal_id, hour_start) -> 4 counts

``expected_counts`` holds, for every hour any batch covered, the counts of the
batch with the highest batch_seq that covered it: what the gateway's store must
hold after every SMS was processed (the spec's replace rule; duplicates and
re-sent hours change nothing). ``batch_seq`` survives restarts through
``SmsFleetOptions.state_path`` (saved before a batch goes out: a gap, never a reuse).
"""

from __future__ import annotations

__all__ = [
    "SentBatch",
    "SmsFleet",
    "SmsFleetOptions",
    "SmsReport",
    "SmsTerminal",
    "SmsTerminalOptions",
    "mixed_options",
]

import asyncio
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from firmware_sim.patterns import Pattern, Steady
from firmware_sim.sms_pdu import Form, split_frame, text_pdus
from firmware_sim.sms_report import SentBatch, SmsReport, load_state, save_state
from protocols import constants as c
from protocols.frames import Hourly, encode

HOUR = 3600
NOTICES = (
    "Your balance is low: 1.20 EUR. Top up now at *100# to keep sending SMS.",
    "Dear customer, from 1 March your tariff changes. Details: example.net/tariff",
    "Hallo! Ist das die Nummer vom Kundenservice? Bitte um Rückruf, danke :-)",
)

DeliverPdu = Callable[[str], None]
"""Where the network puts each PDU: ``ModemServer.deliver``."""


@dataclass(frozen=True, slots=True)
class SmsTerminalOptions:
    """How one terminal sends its hourly counts."""

    form: Form = Form.BINARY
    ref_bits: int = 8
    dcs: int | None = None
    """None: 0x04 binary, 0x00 text, 0x08 text recoded to UCS2 (see ``split_frame``)."""
    hours_per_batch: int = 1
    """A batch every this many hours (24: a 201-byte frame, a concatenated SMS)."""
    send_minute: int = 40
    partial_current_hour: bool = False
    """Also send the hour still running; the next batch sends it again, complete."""
    duplicate: bool = False
    """The network delivers every batch twice."""
    concat_single: bool = False
    """Send a short frame as a concatenated SMS of one part."""

    def __post_init__(self) -> None:
        if not 1 <= self.hours_per_batch <= c.MAX_HOURS or not 0 <= self.send_minute < 60:
            raise ValueError("need 1 <= hours_per_batch <= 168 and 0 <= send_minute < 60")
        if self.ref_bits not in (8, 16):
            raise ValueError("ref_bits is 8 or 16")


def mixed_options(terminal_id: int) -> SmsTerminalOptions:
    """A fleet of every kind, by terminal id."""
    kind = terminal_id % 6
    if kind == 1:
        return SmsTerminalOptions(partial_current_hour=True)
    if kind == 2:
        return SmsTerminalOptions(hours_per_batch=24, ref_bits=16, send_minute=5)
    if kind == 3:
        return SmsTerminalOptions(form=Form.TEXT, hours_per_batch=6)
    if kind == 4:
        return SmsTerminalOptions(form=Form.TEXT, hours_per_batch=24, duplicate=True)
    if kind == 5:
        return SmsTerminalOptions(dcs=0xF5, hours_per_batch=24, partial_current_hour=True)
    return SmsTerminalOptions(duplicate=True, concat_single=True, send_minute=55)


def _four(counts: list[int]) -> tuple[int, int, int, int]:
    return (counts[0], counts[1], counts[2], counts[3])


class SmsTerminal:
    """One terminal's firmware state: counts per hour not sent yet, and batch_seq."""

    __slots__ = (
        "first_unsent",
        "hours",
        "key",
        "next_batch_seq",
        "options",
        "phone",
        "terminal_id",
    )

    def __init__(
        self,
        terminal_id: int,
        key: bytes,
        *,
        phone: str,
        options: SmsTerminalOptions,
        next_batch_seq: int = 0,
        start: int = 0,
    ) -> None:
        self.terminal_id = terminal_id
        self.key = key
        self.phone = phone
        self.options = options
        self.next_batch_seq = next_batch_seq
        self.hours: dict[int, list[int]] = {}
        self.first_unsent = start - start % HOUR

    def press(self, at: float, button: int) -> None:
        hour = int(at) - int(at) % HOUR
        self.hours.setdefault(hour, [0, 0, 0, 0])[button - 1] += 1

    def batches(self, now: int) -> list[Hourly]:
        """What to send at ``now`` (one batch, or more if over 168 hours are due)."""
        current = now - now % HOUR
        last = current if self.options.partial_current_hour else current - HOUR
        if last < self.first_unsent:
            return []
        frames = []
        hour = self.first_unsent
        while hour <= last:
            n = min((last - hour) // HOUR + 1, c.MAX_HOURS)
            counts = tuple(_four(self.hours.get(hour + i * HOUR, [0, 0, 0, 0])) for i in range(n))
            frames.append(Hourly(self.terminal_id, self.next_batch_seq, hour, counts))
            self.next_batch_seq += 1
            hour += n * HOUR
        self.first_unsent = current
        for old in [h for h in self.hours if h < current]:
            del self.hours[old]
        return frames


@dataclass(frozen=True, slots=True)
class SmsFleetOptions:
    pattern: Pattern = field(default_factory=lambda: Steady(0.01))
    """Presses per simulated second (0.01: 36 an hour)."""
    options_of: Callable[[int], SmsTerminalOptions] = mixed_options
    seed: int = 0
    start: int | None = None
    """Simulated start time; None: 7 days before now, on the hour (so SMS are not
    stamped in the future unless the fleet runs more than a week)."""
    smsc: str = "+4917000000"
    phone_of: Callable[[int], str] = field(default_factory=lambda: _phone)
    notices_per_day: float = 1.0
    """Operator notices, fleet-wide, per simulated day (Poisson)."""
    reorder_parts: bool = True
    """The network delivers the parts of a concatenated SMS in a random order."""
    network_delay: int = 5
    """Seconds from a terminal's send to the service-centre time stamp."""
    state_path: Path | None = None


def _phone(terminal_id: int) -> str:
    return f"+49151{terminal_id % 10**8:08d}"


class SmsFleet:
    """SMS terminals in simulated time, delivering their PDUs to a modem."""

    def __init__(
        self, keys: Mapping[int, bytes], deliver: DeliverPdu, options: SmsFleetOptions | None = None
    ) -> None:
        self.options = options or SmsFleetOptions()
        self.deliver = deliver
        start = self.options.start
        if start is None:
            now = int(time.time())
            start = now - now % HOUR - 7 * 24 * HOUR
        self.now = float(start)
        self.report = SmsReport()
        saved = load_state(self.options.state_path)
        seed = self.options.seed
        self.terminals: dict[int, SmsTerminal] = {}
        self._rng = random.Random(f"{seed}:sms-network")
        self._press_rngs: dict[int, random.Random] = {}
        self._delays: dict[int, Iterator[float]] = {}
        self._next_press: dict[int, float] = {}
        self._next_send: dict[int, int] = {}
        self._refs: dict[int, int] = {}
        for terminal_id, key in keys.items():
            opts = self.options.options_of(terminal_id)
            terminal = SmsTerminal(
                terminal_id,
                key,
                phone=self.options.phone_of(terminal_id),
                options=opts,
                next_batch_seq=saved.get(terminal_id, 0),
                start=start,
            )
            self.terminals[terminal_id] = terminal
            rng = random.Random(f"{seed}:{terminal_id}:sms-presses")
            self._press_rngs[terminal_id] = rng
            self._delays[terminal_id] = iter(self.options.pattern.delays(rng))
            self._next_press[terminal_id] = self.now + next(self._delays[terminal_id])
            first_send = start - start % HOUR + opts.send_minute * 60
            self._next_send[terminal_id] = first_send + opts.hours_per_batch * HOUR
            self._refs[terminal_id] = rng.randrange(1 << opts.ref_bits)
        self._next_notice = self.now + self._notice_gap()

    # ------------------------------------------------------------ simulated time

    def advance(self, seconds: float = 0.0, *, hours: float = 0.0) -> list[SentBatch]:
        """Simulate this much time: presses, and the batches that fall due, in time order."""
        target = self.now + seconds + hours * HOUR
        sent: list[SentBatch] = []
        while self.now < target:
            step_end = min(target, self.now + 60.0)
            for terminal_id, terminal in self.terminals.items():
                self._presses_until(terminal, step_end)
                while self._next_send[terminal_id] <= step_end:
                    at = self._next_send[terminal_id]
                    self._next_send[terminal_id] += terminal.options.hours_per_batch * HOUR
                    sent += self.send_batches(terminal_id, at)
            while self._next_notice <= step_end:
                self.send_notice(at=int(self._next_notice))
                self._next_notice += self._notice_gap()
            self.now = step_end
        return sent

    async def run(self, *, hours: float | None = None, speed: float = 3600.0) -> SmsReport:
        """Simulate ``hours`` (None: until cancelled) at ``speed`` simulated seconds per
        real second, delivering as it goes."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        end = None if hours is None else self.now + hours * HOUR
        tick = 0.1
        while end is None or self.now < end:
            step = tick * speed if end is None else min(tick * speed, end - self.now)
            self.advance(step)
            await asyncio.sleep(tick)
        return self.report

    def _presses_until(self, terminal: SmsTerminal, until: float) -> None:
        tid = terminal.terminal_id
        rng = self._press_rngs[tid]
        while self._next_press[tid] < until:
            at = self._next_press[tid]
            button = rng.randint(1, 4)
            terminal.press(at, button)
            self.report.pressed[(tid, int(at) - int(at) % HOUR)] += 1
            self._next_press[tid] = at + max(next(self._delays[tid]), 1e-3)

    def _notice_gap(self) -> float:
        per_day = self.options.notices_per_day
        return self._rng.expovariate(per_day / 86400) if per_day > 0 else float("inf")

    # ------------------------------------------------------------ sending

    def send_batches(self, terminal_id: int, at: int | None = None) -> list[SentBatch]:
        """The terminal sends what is due at ``at`` (default: now) as HOURLY SMS."""
        terminal = self.terminals[terminal_id]
        when = int(self.now) if at is None else at
        frames = terminal.batches(when)
        if frames:
            self._save_state()  # write-ahead: a batch_seq is never used twice
        sent = []
        for frame in frames:
            sent.append(self._send(terminal, frame, when))
        return sent

    def _send(self, terminal: SmsTerminal, frame: Hourly, at: int) -> SentBatch:
        opts = terminal.options
        ref = self._refs[terminal.terminal_id]
        self._refs[terminal.terminal_id] = (ref + 1) % (1 << opts.ref_bits)
        pdus = split_frame(
            encode(frame, terminal.key),
            sender=terminal.phone,
            timestamp=datetime.fromtimestamp(at + self.options.network_delay, UTC),
            form=opts.form,
            ref=ref,
            ref_bits=opts.ref_bits,
            dcs=opts.dcs,
            smsc=self.options.smsc,
            concat_single=opts.concat_single,
        )
        copies = 2 if opts.duplicate else 1
        order = list(pdus)
        for _ in range(copies):
            if self.options.reorder_parts:
                self._rng.shuffle(order)
            for pdu in order:
                self.deliver(pdu)
        batch = SentBatch(frame=frame, sent_at=at, pdus=tuple(order), copies=copies)
        self.report.sent(batch)
        return batch

    def send_notice(
        self, text: str | None = None, *, sender: str = "Operator", at: int | None = None
    ) -> None:
        """A message that is not a frame (an operator notice, a person texting)."""
        when = int(self.now) if at is None else at
        text = text if text is not None else self._rng.choice(NOTICES)
        for pdu in text_pdus(
            text,
            sender=sender,
            timestamp=datetime.fromtimestamp(when, UTC),
            smsc=self.options.smsc,
            ref=self._rng.randrange(256),
        ):
            self.deliver(pdu)
        self.report.notices.append((sender, text))

    def _save_state(self) -> None:
        if self.options.state_path is not None:
            save_state(
                self.options.state_path,
                {t.terminal_id: t.next_batch_seq for t in self.terminals.values()},
            )
