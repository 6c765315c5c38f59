"""The modem's serial port and its one command in flight: AT over pyserial-asyncio-fast.

:class:`AtLink` owns the port's reader and writer and an :class:`protocols.at.AtSession`.
:meth:`AtLink.at` runs one command and returns its response; the exchange lock keeps
one command in flight, whoever calls (the intake's reads and deletes, the sends).
Unsolicited lines go to the ``on_urc`` callback as they come, also in the middle of
a response. A ``>`` prompt completes the prompt wait of :meth:`AtLink.at_prompted`;
one nobody asked for is cancelled with ESC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import serial
import serial_asyncio_fast
import structlog

from gateway.backoff import Backoff
from gateway.errors import ModemError, ModemTimeout, SendRefused, SendUnknown
from gateway.registry.config import SmsSection
from gateway.transports.modem_status import ModemStatus
from protocols.at import ESC, AtSession, Event, Prompt, Response, Stray, Urc

log = structlog.get_logger("gateway.modem")

CTRL_Z = b"\x1a"
_BUSY_RETRY_S = 60.0  # how long a SIM may stay busy before init gives up and starts over


class Reinitialise(Exception):
    """The modem reset or stopped answering: initialise it again."""


class Reopen(Exception):
    """The port is gone or the modem is dead to it: close and open again."""


class AtLink:
    """One serial port, one command at a time, URCs to ``on_urc``."""

    def __init__(
        self, section: SmsSection, status: ModemStatus, on_urc: Callable[[Urc], None]
    ) -> None:
        self._section = section
        self._status = status
        self._on_urc = on_urc
        self._session = AtSession()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._answer: asyncio.Future[Response] | None = None
        self._prompt: asyncio.Future[None] | None = None
        self._exchange = asyncio.Lock()
        self.port_lost = asyncio.Event()
        """Set by the reader when the port closed; cleared when it is opened again."""
        self.wake = asyncio.Event()
        """Set whenever there is something for the work loop (a URC, a lost port)."""

    # --- port -----------------------------------------------------------------------------

    async def open(self) -> None:
        s = self._section
        self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
            url=s.port, baudrate=s.baudrate, rtscts=s.rtscts
        )
        self._session.reset()
        self.port_lost.clear()
        self._status.port_open = True
        log.info("modem_port_open", port=s.port)

    async def close(self) -> None:
        self._status.port_open = False
        self._status.ready = False
        self.fail_answer(ModemError("the port closed"))
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        self._reader = self._writer = None

    def write(self, data: bytes) -> None:
        """Raw bytes to the modem (ESC to cancel a prompt left open before we came)."""
        if self._writer is not None:
            self._writer.write(data)

    async def read_loop(self) -> None:
        assert self._reader is not None
        try:
            while data := await self._reader.read(4096):
                self._status.last_contact = time.time()
                for event in self._session.feed(data):
                    self._dispatch(event)
        except (OSError, serial.SerialException) as exc:
            log.warning("modem_port_lost", error=str(exc), action="the port is reopened by itself")
        self.port_lost.set()
        self.wake.set()
        self.fail_answer(ModemError("the port closed"))

    def fail_answer(self, error: Exception) -> None:
        """End the command in flight with ``error`` (a reset, a lost port)."""
        for waiting in (self._prompt, self._answer):
            if waiting is not None and not waiting.done():
                waiting.set_exception(error)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Response):
            if self._prompt is not None and not self._prompt.done():
                # An error instead of the prompt (+CMS ERROR to AT+CMGS): the answer.
                self._prompt.set_result(None)
            if self._answer is not None and not self._answer.done():
                self._answer.set_result(event)
        elif isinstance(event, Urc):
            self._on_urc(event)
        elif isinstance(event, Prompt):
            if self._prompt is not None and not self._prompt.done():
                self._prompt.set_result(None)
            elif self._writer is not None:
                self._writer.write(ESC)  # a text prompt nobody asked for: cancel it
        elif isinstance(event, Stray):
            log.debug("modem_stray_line", line=event.line)

    # --- commands ---------------------------------------------------------------------

    async def at(self, command: str, *, wait_s: float | None = None) -> Response:
        """Run one command and return its response (any final result); raise on timeout."""
        return await self._exchanged(command, None, wait_s)

    async def at_prompted(self, command: str, data: bytes, *, answer_s: float) -> Response:
        """A command that asks for input (``AT+CMGS=<length>``): ``data`` and Ctrl-Z go
        after the ``> `` prompt; an error instead of the prompt is the response.

        Raises SendRefused (transient) when nothing was written after the command (the
        port closed, no prompt: cancelled with ESC), SendUnknown when ``data`` went out
        and no final result came within ``answer_s``.
        """
        written: list[bool] = []
        try:
            return await self._exchanged(command, (data, written), answer_s)
        except (ModemError, Reinitialise, Reopen) as exc:
            if written:
                raise SendUnknown(f"{command}: sent, then {exc}") from exc
            raise SendRefused(f"{command}: {exc}", code=None, transient=True) from exc

    async def _exchanged(
        self, command: str, data: tuple[bytes, list[bool]] | None, wait_s: float | None
    ) -> Response:
        async with self._exchange:
            if self._writer is None or self.port_lost.is_set():
                raise Reopen("the port is closed")
            loop = asyncio.get_running_loop()
            self._answer = loop.create_future()
            self._prompt = loop.create_future() if data is not None else None
            self._writer.write(self._session.command(command))
            timeout = self._section.command_timeout_s
            try:
                if self._prompt is not None and data is not None:
                    await asyncio.wait_for(self._prompt, timeout)
                    if not self._answer.done():
                        payload, written = data
                        self._writer.write(payload + CTRL_Z)
                        written.append(True)
                return await asyncio.wait_for(self._answer, wait_s or timeout)
            except TimeoutError:
                if self._prompt is not None and not self._answer.done():
                    # Never leave the modem waiting for input, and take a late answer
                    # (to the ESC, or to the PDU) here, so it cannot end the next command.
                    self._writer.write(ESC)
                    with contextlib.suppress(TimeoutError, ModemError, Reinitialise):
                        await asyncio.wait_for(asyncio.shield(self._answer), timeout)
                partial = self._session.abandon()
                self._status.timeouts += 1
                raise ModemTimeout(command, partial) from None
            except ModemError as exc:
                self._session.abandon()
                raise Reopen(str(exc)) from exc
            except Reinitialise:
                self._session.abandon()
                raise
            finally:
                for waiting in (self._prompt, self._answer):
                    if waiting is not None and waiting.done() and not waiting.cancelled():
                        waiting.exception()  # a lost port fails both: neither goes unread
                self._answer = self._prompt = None

    async def at_retrying(self, command: str) -> Response:
        """Like :meth:`at`, retrying while the SIM is busy (CME 14, CMS 314/515)."""
        backoff = Backoff(initial=0.5, cap=5.0)
        deadline = time.monotonic() + _BUSY_RETRY_S
        while True:
            response = await self.at(command)
            if not response.final.busy or time.monotonic() > deadline:
                return response
            await asyncio.sleep(backoff.next_delay())

    async def checked(self, command: str) -> Response:
        """:meth:`at_retrying`, an error raised as ModemError, a timeout as Reinitialise."""
        response = await timeouts_reinitialise(self.at_retrying(command))
        if not response.final.ok:
            raise ModemError(f"{command}: {response.final}")
        return response


async def timeouts_reinitialise(call: Awaitable[Response]) -> Response:
    """A command whose timeout means the modem needs initialising again."""
    try:
        return await call
    except ModemTimeout as exc:
        raise Reinitialise(f"no answer to {exc.command}") from exc
