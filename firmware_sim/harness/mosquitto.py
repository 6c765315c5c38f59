"""Private Mosquitto instances for tests and benches that stop, restart or break a broker.

The shared broker on 127.0.0.1:1883 is never touched: each instance runs from
the installed binary on a free port, with its own config and persistence dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
from pathlib import Path

from firmware_sim.harness.net import free_port

MOSQUITTO = "/usr/sbin/mosquitto"


def user_line() -> str:
    """Keep the broker as the user running the tests.

    Started as root, Mosquitto otherwise drops to the ``mosquitto`` user, which
    cannot write its log or persistence file into pytest's private (0700)
    directories: persistence would silently fail. As any other user the line
    changes nothing.
    """
    return f"user {pwd.getpwuid(os.geteuid()).pw_name}"


class PrivateMosquitto:
    def __init__(
        self,
        directory: Path,
        *,
        extra_config: str = "",
        port: int | None = None,
        config: str | None = None,
    ) -> None:
        """``config``, when given, is the whole configuration instead of the default one.

        It must listen on ``port`` and should log to ``self.log``
        (``directory/mosquitto.log``), so that a failed start shows why.
        """
        self.directory = directory
        self.port = port or free_port()
        self.extra_config = extra_config
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self.log = directory / "mosquitto.log"
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def write_config(self) -> None:
        """Persistence on, as at a store; listener on loopback only."""
        if self.config is not None:
            self.config_path.write_text(self.config, encoding="utf-8")
            return
        self.config_path.write_text(
            f"""
{user_line()}
listener {self.port} 127.0.0.1
persistence true
persistence_location {self.directory}/
autosave_interval 1
max_queued_messages 0
log_dest file {self.log}
log_type error
log_type warning
log_type notice
{self.extra_config}
""",
            encoding="utf-8",
        )

    async def start(self) -> None:
        if not self.config_path.exists():
            self.write_config()
        self.process = await asyncio.create_subprocess_exec(
            MOSQUITTO, "-c", str(self.config_path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            if self.process.returncode is not None:
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited {self.process.returncode}: {log[-2000:]}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    async def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file and exits."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 30)
        self.process = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


class CuttableLink:
    """A TCP proxy to a broker that a test can cut and restore, like a pulled cable."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._up = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pipes = {
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        }
        self._pipes |= pipes
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes -= pipes
        writer.transport.abort()
        up_writer.transport.abort()

    async def cut(self) -> None:
        """Drop every connection and refuse new ones until restore()."""
        self._up = False
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def restore(self) -> None:
        self._up = True

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
