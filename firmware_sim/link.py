"""What every terminal link does, whatever the transport: the part the fleet drives.

A link owns one terminal's connection loop (``run``: connect, serve, back off,
reconnect) and takes the fleet's calls: a record was made (``pressed``), wait
while the terminal's flash is full (``wait_for_room``), cut the power
(``power_loss``), cut the connection (``abort``). It also holds what a session
does the same way on every transport: the heartbeat, faults applied to the
bytes, counting answers, and a sender and a receiver run side by side.

A transport writes one connection, ``_connect_and_serve``: ``tcp.TerminalLink``
and ``mqtt.MqttTerminalLink`` are the two kinds.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypedDict, TypeVar

import structlog

from firmware_sim.backoff import Backoff, BackoffOptions
from firmware_sim.errors import ConnectFailed, SessionEnded, TerminalStopped
from firmware_sim.faults import Fault, FaultPlanner
from firmware_sim.report import TerminalReport
from firmware_sim.terminal import MadePress, Terminal
from protocols import constants as c
from protocols.constants import NakCode
from protocols.frames import Frame, Heartbeat, Presses, encode, frame_type
from protocols.terminal_session import NakAction, Naked

MAX_QUEUED_FIELD = 0xFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOptions:
    """What the link options of every transport hold: window, timing, backoff, HEARTBEAT.

    Keyword-only, so that each transport's options put its own fields (host, port,
    ...) first.
    """

    window: int = 4
    """Frames sent and not answered yet (TCP: PRESSES and HEARTBEAT; MQTT: PRESSES)."""
    max_records: int = 50
    """Records per PRESSES frame, 1..680."""
    heartbeat_interval: float = 60.0
    connect_timeout: float = 10.0
    """MQTT: also the longest wait for SUBACK, PUBACK or a graceful DISCONNECT."""
    answer_timeout: float = 30.0
    """TCP: longest wait for the WELCOME, or for the answer to the oldest frame in flight.
    MQTT: wait for the answer to a frame before publishing it again (then twice as long,
    up to ``max_answer_timeout``)."""
    reconnect: BackoffOptions = field(default_factory=BackoffOptions)
    busy: BackoffOptions = field(default_factory=lambda: BackoffOptions(0.5, 10.0))
    """Pause after NAK BUSY before sending PRESSES again."""
    battery_pct: int = c.MAINS_POWERED
    signal_dbm: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= c.MAX_RECORDS:
            raise ValueError(f"max_records must be 1..{c.MAX_RECORDS}, not {self.max_records}")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if min(self.heartbeat_interval, self.connect_timeout, self.answer_timeout) <= 0:
            raise ValueError("intervals and timeouts must be positive")


OptionsT_co = TypeVar("OptionsT_co", bound=SessionOptions, covariant=True)
"""Covariant: the fleet holds links of either kind as ``Link[SessionOptions]``."""


class LinkParts(TypedDict):
    """What the fleet hands every link besides its terminal and options."""

    report: TerminalReport
    faults: FaultPlanner
    rng: random.Random
    max_pending: int
    on_change: Callable[[], None]


class Link(abc.ABC, Generic[OptionsT_co]):
    """One terminal's link to the gateway: reconnects until cancelled or stopped."""

    transport: ClassVar[str]

    def __init__(
        self,
        terminal: Terminal,
        options: OptionsT_co,
        *,
        report: TerminalReport,
        faults: FaultPlanner,
        rng: random.Random,
        max_pending: int,
        on_change: Callable[[], None],
    ) -> None:
        self.terminal = terminal
        self.options = options
        self.report = report
        self.faults = faults
        self.rng = rng
        self.max_pending = max_pending
        self.on_change = on_change
        self.stopped = False
        self.in_session = asyncio.Event()
        """Set while a session is open (TCP: after WELCOME; MQTT: subscribed)."""
        self.wake = asyncio.Event()
        """Set when the sender should look again: a record was made, an answer came."""
        self.last_heartbeat = 0.0
        """When the last HEARTBEAT went out (or the session opened), loop time."""
        self._room = asyncio.Event()
        self._room.set()
        self._abort_reason: str | None = None
        self._cut: Callable[[], None] | None = None
        """Aborts the current connection; None between connections."""
        self.log = structlog.get_logger(type(self).__module__).bind(
            terminal_id=terminal.terminal_id, transport=self.transport
        )

    # ------------------------------------------------------------ called by the fleet

    async def run(self) -> None:
        """Connect, serve, reconnect; returns only when the gateway does not know us."""
        backoff = Backoff(self.options.reconnect, self.rng)
        while True:
            try:
                await self._connect_and_serve(backoff)
            except TerminalStopped:
                self._stop()
                return
            except SessionEnded as exc:
                reason = self._abort_reason or type(exc).__name__
                self.report.session_ends[reason] += 1
                self.log.debug("session ended", reason=reason, detail=exc.detail)
            except ConnectFailed as exc:
                self.report.connect_failures += 1
                self.log.debug("connect failed", error=exc.detail)
            await asyncio.sleep(backoff.next_delay())

    def abort(self, reason: str) -> None:
        """Abort the current connection, if any (the session then ends with ``reason``)."""
        if self._cut is not None:
            self._abort_reason = reason
            self._cut()

    def pressed(self, made: MadePress) -> None:
        """A record was made: send it when the window allows."""
        self.report.made(made)
        if len(self.terminal.pending) >= self.max_pending:
            self._room.clear()
        self.wake.set()
        self.on_change()

    def records_acked(self) -> None:
        if len(self.terminal.pending) < self.max_pending:
            self._room.set()
        self.on_change()

    async def wait_for_room(self) -> None:
        """Wait while the terminal holds ``max_pending`` records (backpressure, no drops)."""
        while len(self.terminal.pending) >= self.max_pending and not self.stopped:
            self._room.clear()
            await self._room.wait()

    def power_loss(self) -> None:
        """Cut the power: connection gone, clock lost, boot_count + 1; records stay."""
        self.terminal.power_loss()
        self.report.power_losses += 1
        self.report.faults[Fault.POWER_LOSS.value] += 1
        self.abort("power_loss")
        self.on_change()

    # ------------------------------------------------------------ for the transports
    # (the link subclasses and their per-connection sessions; the fleet calls none)

    @abc.abstractmethod
    async def _connect_and_serve(self, backoff: Backoff) -> None:
        """One connection: open it (ConnectFailed if it cannot be), serve until it ends
        (SessionEnded, TerminalStopped), reset ``backoff`` once a session is open."""

    @contextlib.contextmanager
    def _connected(self, cut: Callable[[], None]) -> Iterator[None]:
        """While a connection is up: ``abort`` calls ``cut``; ``in_session`` ends with it."""
        self.report.connects += 1
        self._abort_reason = None
        self._cut = cut
        try:
            yield
        finally:
            self._cut = None
            self.in_session.clear()

    def session_opened(self, reconnect: Backoff) -> float:
        """A session is open: count it, reset the reconnect backoff; returns the loop time."""
        reconnect.reset()
        self.report.sessions += 1
        now = asyncio.get_running_loop().time()
        self.last_heartbeat = now
        self.in_session.set()
        self.on_change()
        return now

    async def serve_both(
        self, receive: Coroutine[Any, Any, None], send: Coroutine[Any, Any, None]
    ) -> None:
        """Run the receiver and the sender until one ends the session; cancel the other;
        raise why it ended.

        Not a TaskGroup: in Python 3.11 a TaskGroup whose child fails while the
        parent waits in ``__aexit__`` leaves the parent marked as cancelling.
        """
        terminal_id = self.terminal.terminal_id
        tasks = [
            asyncio.create_task(receive, name=f"{self.transport}-receive-{terminal_id}"),
            asyncio.create_task(send, name=f"{self.transport}-send-{terminal_id}"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        errors = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
        if not errors:
            raise AssertionError("the sender and the receiver never return")
        raise min(errors, key=_severity)

    async def wait_for_wake(self, deadline: float) -> None:
        """The sender's pause: until ``wake`` is set or ``deadline`` (loop time) comes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.wake.wait()

    @property
    def heartbeat_deadline(self) -> float:
        return self.last_heartbeat + self.options.heartbeat_interval

    def heartbeat_due(self, now: float) -> Heartbeat | None:
        """A HEARTBEAT if one is due at ``now`` (it then counts as sent), else None."""
        if now < self.heartbeat_deadline:
            return None
        self.last_heartbeat = now
        terminal = self.terminal
        return Heartbeat(
            terminal.terminal_id,
            terminal.clock.now(),
            self.options.battery_pct,
            self.options.signal_dbm,
            min(len(terminal.pending), MAX_QUEUED_FIELD),
            terminal.uptime(),
        )

    def presses_frame(self, batch: tuple[MadePress, ...]) -> Presses:
        """A PRESSES frame of ``batch`` (consecutive seqs of one clock group)."""
        first = batch[0]
        clock = self.terminal.clock
        if first.unsynced:
            # sent_at from the same (lost) clock that stamped the records, so that
            # ts + (received - sent_at) gives the gateway real time back (spec 6).
            sent_at, flags = clock.read(first.clock_offset), c.CLOCK_UNSYNCED
        else:
            sent_at, flags = clock.now(), 0
        return Presses(
            self.terminal.terminal_id,
            sent_at,
            first.seq,
            flags,
            tuple(made.to_record() for made in batch),
        )

    def encode_with_faults(
        self, frame: Frame, *, impossible: frozenset[Fault] = frozenset()
    ) -> tuple[bytes, frozenset[Fault]]:
        """The bytes of ``frame`` and the faults planned for it (counted), CRC already
        corrupted if planned; ``impossible`` faults cannot happen on this transport."""
        faults = self.faults.for_frame(frame_type(frame)) - impossible
        for fault in faults:
            self.report.faults[fault.value] += 1
        data = encode(frame, self.terminal.key)
        if Fault.CORRUPT_CRC in faults:
            data = data[:-1] + bytes([data[-1] ^ 0x5A])
        return data, faults

    def acknowledge(self, first_seq: int, last_seq: int) -> None:
        """An ACK for the records ``first_seq..last_seq``: they are done."""
        acked = self.terminal.acknowledge(first_seq, last_seq)
        self.report.acked_records(acked, last_seq - first_seq + 1)
        self.records_acked()

    def count_nak(self, naked: Naked) -> None:
        """Count a NAK; UNKNOWN_TERMINAL stops the terminal (TerminalStopped)."""
        self.report.naks[naked.nak.code.name] += 1
        if naked.action is NakAction.STOP:
            raise TerminalStopped(self.terminal.terminal_id, self.report.outstanding)

    def refused(self, naked: Naked, what: str) -> None:
        """A NAK that says this firmware sent ``what`` wrong (MALFORMED, BAD_TAG, ...)."""
        code = naked.nak.code.name
        self.report.firmware_bug(f"NAK {code} for {what}")
        self.log.error("gateway refused a frame", nak=code, frame=what)

    def gateway_broke_protocol(self, detail: str) -> None:
        self.report.gateway_error(detail)
        self.log.warning("gateway broke the protocol", detail=detail)

    def _stop(self) -> None:
        self.stopped = True
        self.report.stop(NakCode.UNKNOWN_TERMINAL.name)
        self._room.set()
        self.log.warning("gateway does not know this terminal; stopped")


def _severity(exc: BaseException) -> int:
    """Which of two reasons a session ended for is reported: bugs first."""
    if isinstance(exc, TerminalStopped):
        return 1
    if isinstance(exc, SessionEnded):
        return 2
    return 0
