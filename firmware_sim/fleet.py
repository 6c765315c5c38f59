"""A fleet of simulated terminals on TCP or MQTT: the async entry point.

::

    async with Fleet(keys, LinkOptions("127.0.0.1", port), FleetOptions(seed=1)) as fleet:
        await fleet.run(presses=1000)          # or duration=..., or both
        await fleet.wait_all_acked(timeout=30)
        fleet.report.acked                     # (terminal_id, seq) -> MadePress

``MqttLinkOptions(host, port)`` in place of ``LinkOptions`` makes each terminal
an MQTT client of that broker instead (see ``mqtt.py``); everything else is the same.

Entering the fleet loads the state file (if ``state_dir`` is set) and starts one
connection task per terminal; leaving it cancels them all, waits for them, and
saves the state. A task that fails with a bug cancels the block (TaskGroup rules).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from firmware_sim.faults import Fault, FaultOptions, FaultPlanner, ScheduledFault
from firmware_sim.link import Link, SessionOptions
from firmware_sim.mqtt import MqttLinkOptions, MqttTerminalLink
from firmware_sim.patterns import Pattern, PressBudget, Steady
from firmware_sim.report import FleetReport
from firmware_sim.state import StateStore
from firmware_sim.tcp import LinkOptions, TerminalLink
from firmware_sim.terminal import MadePress, RealTime, Terminal
from protocols import constants as c


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """What the terminals of a fleet do, apart from how they reach the gateway."""

    pattern: Pattern = field(default_factory=Steady)
    """When presses happen, for every terminal ``pattern_of`` does not name."""
    pattern_of: Callable[[int], Pattern | None] | None = None
    """A terminal's own pattern by id; None (or returning None) means ``pattern``."""
    seed: int = 0
    faults: FaultOptions = field(default_factory=FaultOptions)
    state_dir: Path | None = None
    """Where ``{name}.json`` keeps seqs, boot counts and pending records across runs."""
    name: str = "fleet"
    max_pending: int = 10_000
    """Records a terminal holds before its presses wait (flash capacity; never a drop)."""
    state_flush_interval: float = 1.0
    seq_block: int = 1024
    clock_offset: float = 0.0
    """Clock error of a terminal new to the state file, seconds."""

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.state_flush_interval < 0:
            raise ValueError("need max_pending >= 1 and state_flush_interval >= 0")


class Fleet:
    """N simulated terminals, each with its own connection loop to one gateway."""

    def __init__(
        self,
        keys: Mapping[int, bytes],
        link: LinkOptions | MqttLinkOptions,
        options: FleetOptions | None = None,
        *,
        real_time: RealTime = time.time,
    ) -> None:
        self.keys = dict(keys)
        self.link_options = link
        self.options = options or FleetOptions()
        self.real_time = real_time
        self.report = FleetReport(self.keys)
        self.terminals: dict[int, Terminal] = {}
        self._links: dict[int, Link[SessionOptions]] = {}
        self._store = (
            StateStore(
                self.options.state_dir / f"{self.options.name}.json",
                seq_block=self.options.seq_block,
            )
            if self.options.state_dir is not None
            else None
        )
        self._state_changed = asyncio.Event()
        self._entered = False
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Fleet:
        if self._entered:
            raise RuntimeError("a Fleet runs once; make a new one (same state_dir) to go on")
        self._entered = True
        self._build_terminals()
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        for link in self._links.values():
            self._tasks.append(
                group.create_task(link.run(), name=f"terminal-{link.terminal.terminal_id}")
            )
        if self._store is not None:
            self._tasks.append(group.create_task(self._save_state_in_batches(self._store)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        try:
            if group is None:
                return
            if exc_type is None or issubclass(exc_type, asyncio.CancelledError):
                await group.__aexit__(exc_type, exc, tb)
            else:
                # The block failed: let its exception through as it is, not wrapped
                # in an ExceptionGroup (our tasks are cancelled, not failed).
                await group.__aexit__(None, None, None)
        finally:
            if self._store is not None:
                self._store.write(*self._store.snapshot(clean=True))

    def _build_terminals(self) -> None:
        saved = self._store.load() if self._store is not None else {}
        for terminal_id, key in self.keys.items():
            state = saved.get(terminal_id)
            if state is None:
                terminal = Terminal(
                    terminal_id,
                    key,
                    real_time=self.real_time,
                    clock_offset=self.options.clock_offset,
                )
            else:
                terminal = Terminal(
                    terminal_id,
                    key,
                    real_time=self.real_time,
                    next_seq=state.next_seq,
                    boot_count=state.boot_count,
                    clock_offset=state.clock_offset,
                    clock_synced=state.clock_synced,
                    pending=state.pending,
                    frames=dict(state.frames),
                )
                for made in terminal.pending.values():
                    self.report[terminal_id].made(made, restored=True)
            self.terminals[terminal_id] = terminal
            self._links[terminal_id] = self._make_link(terminal)
        if self._store is not None:
            self._store.attach(self.terminals.values())
            self._store.reserve_all()

    def _make_link(self, terminal: Terminal) -> Link[SessionOptions]:
        terminal_id = terminal.terminal_id
        seed = self.options.seed
        report = self.report[terminal_id]
        faults = FaultPlanner(self.options.faults, random.Random(f"{seed}:{terminal_id}:faults"))
        rng = random.Random(f"{seed}:{terminal_id}:link")
        max_pending = self.options.max_pending
        on_change = self._state_changed.set
        if isinstance(self.link_options, MqttLinkOptions):
            return MqttTerminalLink(
                terminal,
                self.link_options,
                report=report,
                faults=faults,
                rng=rng,
                max_pending=max_pending,
                on_change=on_change,
            )
        return TerminalLink(
            terminal,
            self.link_options,
            report=report,
            faults=faults,
            rng=rng,
            max_pending=max_pending,
            on_change=on_change,
        )

    async def _save_state_in_batches(self, store: StateStore) -> None:
        """Save at most once per flush interval, and only after something changed."""
        while True:
            await self._state_changed.wait()
            await asyncio.sleep(self.options.state_flush_interval)
            self._state_changed.clear()
            await asyncio.to_thread(store.write, *store.snapshot())

    # ------------------------------------------------------------ making presses

    async def run(
        self, *, presses: int | None = None, duration: float | None = None
    ) -> FleetReport:
        """Press buttons by each terminal's pattern until ``presses`` presses were made
        fleet-wide, or ``duration`` seconds passed (whichever first; neither: until
        cancelled). Scheduled faults run meanwhile. Does not wait for ACKs."""
        budget = PressBudget(presses)
        async with asyncio.TaskGroup() as group:
            scheduled = [
                group.create_task(self._scheduled_fault(f)) for f in self.options.faults.schedule
            ]
            try:
                await self._make_presses(budget, duration)
            finally:
                for task in scheduled:
                    task.cancel()
        return self.report

    async def _make_presses(self, budget: PressBudget, duration: float | None) -> None:
        deadline = asyncio.timeout(duration)
        try:
            async with deadline, asyncio.TaskGroup() as group:
                for link in self._links.values():
                    group.create_task(self._press_loop(link, budget))
        except TimeoutError:
            if not deadline.expired():
                raise

    async def _press_loop(self, link: Link[SessionOptions], budget: PressBudget) -> None:
        terminal_id = link.terminal.terminal_id
        rng = random.Random(f"{self.options.seed}:{terminal_id}:presses")
        for delay in self._pattern_of(terminal_id).delays(rng):
            if budget.spent or link.stopped:
                return
            await asyncio.sleep(delay)
            await link.wait_for_room()
            if link.stopped or not budget.take():
                return
            self.press(terminal_id, rng.randint(1, 4), rng.randint(0, c.MAX_FOLLOWUP))
            if link.faults.power_loss_after_press():
                link.power_loss()

    def _pattern_of(self, terminal_id: int) -> Pattern:
        chosen = self.options.pattern_of(terminal_id) if self.options.pattern_of else None
        return chosen if chosen is not None else self.options.pattern

    async def _scheduled_fault(self, scheduled: ScheduledFault) -> None:
        await asyncio.sleep(scheduled.at)
        targets = self.keys if scheduled.terminal_id is None else [scheduled.terminal_id]
        for terminal_id in targets:
            self.inject(terminal_id, scheduled.fault)

    # ------------------------------------------------------------ on demand

    def press(self, terminal_id: int, button: int = 3, followup: int = 0) -> MadePress:
        """One press now on ``terminal_id`` (any button/followup, even invalid ones)."""
        link = self._links[terminal_id]
        made = link.terminal.press(button, followup)
        link.pressed(made)
        return made

    def power_loss(self, terminal_id: int) -> None:
        """Cut the power of ``terminal_id`` now (see ``Terminal.power_loss``)."""
        self._links[terminal_id].power_loss()

    def drop(self, terminal_id: int) -> None:
        """Abort the connection of ``terminal_id`` now, if it has one."""
        self._links[terminal_id].abort("drop")

    def inject(self, terminal_id: int, fault: Fault) -> None:
        """A fault now (power loss) or on the next frame it fits (frame faults)."""
        link = self._links[terminal_id]
        if fault is Fault.POWER_LOSS:
            link.power_loss()
        else:
            link.faults.inject(fault)

    def stopped(self) -> list[int]:
        """Terminals the gateway does not know (NAK UNKNOWN_TERMINAL)."""
        return [tid for tid, link in self._links.items() if link.stopped]

    async def wait_connected(self, terminal_ids: Iterable[int] | None = None) -> None:
        """Wait until each terminal (all by default) has a session open (TCP: WELCOME
        received; MQTT: connected and subscribed to its down topic).

        A terminal the gateway does not know never gets one: bound this with
        ``asyncio.timeout``.
        """
        for terminal_id in self._links if terminal_ids is None else terminal_ids:
            await self._links[terminal_id].in_session.wait()

    async def wait_all_acked(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """See ``FleetReport.wait_all_acked``."""
        await self.report.wait_all_acked(timeout)

    async def wait_acked(self, at_least: int, timeout: float | None) -> None:  # noqa: ASYNC109
        """See ``FleetReport.wait_acked``."""
        await self.report.wait_acked(at_least, timeout)
