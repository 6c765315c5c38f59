"""A private HAProxy (Debian's /usr/sbin/haproxy) in front of gateway TCP listeners.

TCP mode, ``send-proxy-v2`` and health checks as deploy/haproxy/haproxy.cfg
has them, on free ports in its own directory; faster checks, so that a test
sees an instance taken out and back within a second or two. Readiness is a
``monitor-uri`` on a port of its own, so that starting sends nothing to a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from firmware_sim.harness.net import free_port

HAPROXY = "/usr/sbin/haproxy"
START_TIMEOUT_S = 15.0


def haproxy_config(
    port: int, monitor_port: int, backends: Sequence[int], *, check_inter_ms: int = 300
) -> str:
    """The configuration: ``port`` for terminals, relayed to the gateways on ``backends``."""
    servers = "\n".join(f"    server gw{n} 127.0.0.1:{p}" for n, p in enumerate(backends))
    checks = f"check inter {check_inter_ms}ms fall 1 rise 1 on-marked-down shutdown-sessions"
    return f"""
global
    maxconn 5000

defaults
    mode tcp
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    option redispatch
    retries 3

frontend monitor
    mode http
    bind 127.0.0.1:{monitor_port}
    monitor-uri /up
    timeout client 5s

frontend smiley_terminals
    bind 127.0.0.1:{port}
    default_backend smiley_gateways

backend smiley_gateways
    balance leastconn
    default-server send-proxy-v2 {checks}
{servers}
"""


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """``haproxy -c -f path``: whether HAProxy takes the file (its output says why not)."""
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )


class PrivateHaproxy:
    """HAProxy on a free ``port`` relaying to gateways listening on ``backends``."""

    def __init__(
        self, directory: Path, backends: Sequence[int], *, check_inter_ms: int = 300
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.monitor_port = free_port()
        self.backends = list(backends)
        self.check_inter_ms = check_inter_ms
        self.config_path = directory / "haproxy.cfg"
        self.log = directory / "haproxy.log"
        self.process: asyncio.subprocess.Process | None = None
        directory.mkdir(parents=True, exist_ok=True)

    async def __aenter__(self) -> PrivateHaproxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.config_path.write_text(
            haproxy_config(
                self.port, self.monitor_port, self.backends, check_inter_ms=self.check_inter_ms
            ),
            encoding="utf-8",
        )
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                HAPROXY, "-db", "-f", str(self.config_path),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                text = self.log.read_text(encoding="utf-8", errors="replace")
                raise RuntimeError(f"haproxy exited {self.process.returncode}: {text[-2000:]}")
            if await self._monitor_up():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"haproxy did not start within {START_TIMEOUT_S:.0f} s")

    async def _monitor_up(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.monitor_port)
        except OSError:
            return False
        try:
            writer.write(b"GET /up HTTP/1.0\r\n\r\n")
            status = await asyncio.wait_for(reader.readline(), 5)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
        return b" 200 " in status

    async def stop(self) -> None:
        """SIGUSR1 would let connections finish; a test wants them cut: SIGTERM."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 15)
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        self.process = None
