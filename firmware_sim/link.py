"""What every terminal link does, whatever the transport: the part the fleet drives.

A link owns one terminal's connection loop (``run``) and takes the fleet's calls:
a record was made (``pressed``), wait while the terminal's flash is full
(``wait_for_room``), cut the power (``power_loss``), cut the connection
(``abort``). ``tcp.TerminalLink`` and ``mqtt.MqttTerminalLink`` are the two kinds.
"""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import Callable
from typing import ClassVar, Protocol

import structlog

from firmware_sim.faults import Fault, FaultPlanner
from firmware_sim.report import TerminalReport
from firmware_sim.terminal import MadePress, Terminal
from protocols import constants as c
from protocols.constants import NakCode
from protocols.frames import Heartbeat, Presses

MAX_QUEUED_FIELD = 0xFFFF


class HeartbeatOptions(Protocol):
    """The link options a HEARTBEAT frame reads."""

    @property
    def battery_pct(self) -> int: ...

    @property
    def signal_dbm(self) -> int: ...


class Link(abc.ABC):
    """One terminal's link to the gateway: reconnects until cancelled or stopped."""

    transport: ClassVar[str]

    def __init__(
        self,
        terminal: Terminal,
        *,
        report: TerminalReport,
        faults: FaultPlanner,
        rng: random.Random,
        max_pending: int,
        on_change: Callable[[], None],
    ) -> None:
        self.terminal = terminal
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
        self._room = asyncio.Event()
        self._room.set()
        self._abort_reason: str | None = None
        self.log = structlog.get_logger(type(self).__module__).bind(
            terminal_id=terminal.terminal_id, transport=self.transport
        )

    # ------------------------------------------------------------ called by the fleet

    @abc.abstractmethod
    async def run(self) -> None:
        """Connect, serve, reconnect; returns only when the gateway does not know us."""

    @abc.abstractmethod
    def abort(self, reason: str) -> None:
        """Abort the current connection, if any (the session then ends with ``reason``)."""

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

    def _stop(self) -> None:
        self.stopped = True
        self.report.stop(NakCode.UNKNOWN_TERMINAL.name)
        self._room.set()
        self.log.warning("gateway does not know this terminal; stopped")

    def heartbeat_frame(self, options: HeartbeatOptions) -> Heartbeat:
        terminal = self.terminal
        return Heartbeat(
            terminal.terminal_id,
            terminal.clock.now(),
            options.battery_pct,
            options.signal_dbm,
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
