from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from firmware_sim.harness import PrivateMosquitto, free_port
from gateway.app import Gateway, build, run
from gateway.registry.config import load_config
from tests.support import REGISTRY_TOML, write_config


class GatewayHarness:
    """An in-process gateway on a free port, with a settable clock."""

    def __init__(self, directory: Path, extra: str = "", registry: str | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.config_path = write_config(
            directory, port=self.port, extra=extra, registry=registry or REGISTRY_TOML
        )
        self.now: float | None = None
        self.gateway: Gateway | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def clock(self) -> float:
        return time.time() if self.now is None else self.now

    async def start(self) -> Gateway:
        config = load_config(self.config_path, env={})
        self.gateway = await build(config, clock=self.clock)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(run(self.gateway, stop=self._stop))
        await asyncio.wait_for(self.gateway.started.wait(), 10)
        return self.gateway

    async def stop(self) -> None:
        if self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, 30)
            self._task = None

    async def forwarded(self) -> None:
        """Wait until everything committed so far is in the central store."""
        assert self.gateway is not None
        await self.gateway.forwarder.drain()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[GatewayHarness]:
    h = GatewayHarness(tmp_path)
    await h.start()
    yield h
    await h.stop()


@pytest.fixture
def make_harness(tmp_path: Path) -> Callable[..., GatewayHarness]:
    counter = iter(range(1000))

    def make(extra: str = "", registry: str | None = None) -> GatewayHarness:
        directory = tmp_path / f"gw{next(counter)}"
        directory.mkdir()
        return GatewayHarness(directory, extra, registry)

    return make


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() - before if not t.done() and t is not current]
    for task in leftover:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    assert not leftover, f"tasks left running: {leftover}"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[PrivateMosquitto]:
    """A private Mosquitto on a free port, for a test that may stop or break it."""
    mosquitto = PrivateMosquitto(tmp_path / "broker", extra_config="allow_anonymous true")
    await mosquitto.start()
    yield mosquitto
    await mosquitto.stop()
