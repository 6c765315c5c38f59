"""The servers that put a simulated modem (``ModemCore``) behind a pseudo-terminal or a
TCP port (``socket://`` for pyserial); see :mod:`firmware_sim.modem` for the modem."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import time
import tty
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from firmware_sim.modem import Clock, ModemCore, ModemCounters, StoredMessage
from firmware_sim.modem_network import SimNetwork
from firmware_sim.modem_profiles import GENERIC, ModemProfile

MAX_PENDING_OUTPUT = 1 << 16
"""Bytes a port keeps for a reader that does not read; a UART with nobody listening loses
the rest (the sim's messages stay stored, only the indication is gone)."""

log = structlog.get_logger("firmware_sim.modem")


class ModemServer(abc.ABC):
    """A ``ModemCore`` behind a port; keeps its clock ticking. An async context manager."""

    def __init__(
        self,
        profile: ModemProfile = GENERIC,
        *,
        pin: str | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.core = ModemCore(profile, clock=clock, pin=pin)
        self.clock = clock
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._log = log.bind(profile=profile.name)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        await self._open()
        self.core.take_output()  # boot URCs before the port existed are lost, as on a UART
        self._ticker = asyncio.create_task(self._tick_loop(), name="modem-ticker")

    async def close(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await self._close()

    # ------------------------------------------------------------ control API

    @property
    def profile(self) -> ModemProfile:
        return self.core.profile

    @property
    def counters(self) -> ModemCounters:
        return self.core.counters

    @property
    def network(self) -> SimNetwork:
        """What was sent, what people received, the failures to answer sends with."""
        return self.core.network

    def deliver(self, pdu_hex: str) -> None:
        """An SMS arrives from the network (stored, or held back while storage is full)."""
        self.core.deliver(pdu_hex)
        self._pump()

    def reset(self) -> None:
        """A spontaneous modem reset: boot URCs, settings forgotten, messages kept."""
        self.core.reset()
        self._pump()

    def hang(self, seconds: float) -> None:
        """The modem stops answering for ``seconds``."""
        self.core.hang(seconds)
        self._pump()

    def storage(self) -> dict[int, StoredMessage]:
        """Index (as the modem numbers it) to stored message."""
        return self.core.storage()

    @property
    def stored_now(self) -> int:
        return self.core.stored_now

    @property
    def all_taken(self) -> bool:
        """Every message the network offered was stored, and none is stored now: the
        gateway took (and deleted) them all."""
        counters = self.core.counters
        return self.core.stored_now == 0 and counters.delivered >= counters.offered

    async def disconnect(self, down_s: float = 1.0, *, reboot: bool = True) -> None:
        """USB re-enumeration: the port goes away for ``down_s`` and comes back (the modem
        rebooted unless ``reboot`` is False). Returns once it is back."""
        self._log.info("modem_port_down", seconds=down_s)
        await self._close()
        await asyncio.sleep(down_s)
        if reboot:
            self.core.reset()
        await self._open()
        self._pump()
        self._log.info("modem_port_up")

    # ------------------------------------------------------------ transport side

    def received(self, data: bytes) -> None:
        self.core.receive(data)
        self._pump()

    def _pump(self) -> None:
        out = self.core.take_output()
        if out:
            self._write(out)
        self._wake.set()

    async def _tick_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            self._wake.clear()
            delay = None if deadline is None else max(deadline - self.clock(), 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self.core.tick()
            out = self.core.take_output()
            if out:
                self._write(out)

    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    def _write(self, data: bytes) -> None: ...


class PtyModemServer(ModemServer):
    """The modem on a pseudo-terminal: the gateway opens ``path`` (the slave, or ``link``,
    a symlink to it that survives ``disconnect``) with pyserial."""

    def __init__(
        self,
        profile: ModemProfile = GENERIC,
        *,
        link: Path | str | None = None,
        pin: str | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(profile, pin=pin, clock=clock)
        self.link = Path(link) if link is not None else None
        self.slave_path = ""
        self._master = -1
        self._slave = -1
        self._pending = bytearray()

    @property
    def path(self) -> str:
        """What the gateway opens: the link if there is one, else the slave device."""
        return str(self.link) if self.link is not None else self.slave_path

    async def _open(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        # We keep the slave open too: without any slave fd, reads on the master fail
        # with EIO, and the modem must outlive the gateway closing its port.
        self._master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        self._pending.clear()
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.slave_path)
            tmp.replace(self.link)
        asyncio.get_running_loop().add_reader(master, self._readable)

    async def _close(self) -> None:
        if self._master < 0:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        loop.remove_writer(self._master)
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._log.warning("pty_read_failed", error=str(exc))
            return
        self.received(data)

    def _write(self, data: bytes) -> None:
        if self._master < 0:
            return
        self._pending += data
        del self._pending[:-MAX_PENDING_OUTPUT]
        self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            written = os.write(self._master, self._pending) if self._pending else 0
        except (BlockingIOError, InterruptedError):
            written = 0
        del self._pending[:written]
        if self._pending:
            loop.add_writer(self._master, self._flush)
        else:
            loop.remove_writer(self._master)


class SocketModemServer(ModemServer):
    """The modem on a TCP port, for pyserial's ``socket://HOST:PORT``. Every connection
    sees every byte the modem sends; ``port=0`` picks a free port (see ``url``)."""

    def __init__(
        self,
        profile: ModemProfile = GENERIC,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pin: str | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(profile, pin=pin, clock=clock)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    async def _open(self) -> None:
        self._server = await asyncio.start_server(
            self._connected, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()  # the handler reads EOF and ends
        if self._handlers:
            _, stuck = await asyncio.wait(list(self._handlers), timeout=5.0)
            for task in stuck:
                task.cancel()
        await server.wait_closed()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while data := await reader.read(4096):
                self.received(data)
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    def _write(self, data: bytes) -> None:
        for writer in list(self._writers):
            if writer.transport.get_write_buffer_size() < MAX_PENDING_OUTPUT:
                writer.write(data)
