"""systemd's notify protocol, tested through a real notify socket (no systemd needed).

systemd restarts a service whose WATCHDOG=1 pings stop for WatchdogSec. The
pings must come from the event loop, so that a blocked loop stops them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.harness import GatewayProcess, free_port
from gateway.ops.watchdog import HANG_HOOK_ENV, LoopWatchdog, Notifier
from tests.notify import NotifyListener
from tests.support import write_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    with NotifyListener() as notify:
        yield notify


def test_notifier_reads_systemds_environment(listener: NotifyListener) -> None:
    off = Notifier.from_env({})
    assert not off.enabled
    assert not off.ready()  # a no-op outside systemd
    env = listener.env(watchdog_s=4)
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval_s == 4.0
    other_pid = Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other_pid.watchdog_interval_s is None  # the watchdog is for another process
    assert notifier.ready("serving")
    listener.wait_for("READY=1", timeout=5)
    listener.wait_for("STATUS=serving", timeout=5)
    assert f"MAINPID={os.getpid()}" in listener.lines()
    notifier.close()
    other_pid.close()


def test_abstract_socket_address() -> None:
    import socket  # noqa: PLC0415

    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"smiley-test-{os.getpid()}"
    server.bind("\0" + name)
    server.settimeout(5)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    try:
        assert notifier.ping()
        assert server.recv(100) == b"WATCHDOG=1"
    finally:
        notifier.close()
        server.close()


async def test_pings_stop_while_the_event_loop_is_blocked(listener: NotifyListener) -> None:
    notifier = Notifier.from_env(listener.env(watchdog_s=0.4))
    dog = LoopWatchdog(notifier, interval_s=0.4)  # a ping every 0.2 s
    task = asyncio.create_task(dog.run())
    try:
        await asyncio.to_thread(listener.wait_for, "WATCHDOG=1", count=3, timeout=5)
        blocked_at = time.monotonic()
        time.sleep(1.5)  # noqa: ASYNC251 - on purpose: the loop hangs, as in a blocking bug
        unblocked_at = time.monotonic()
        await asyncio.to_thread(listener.wait_for, "WATCHDOG=1", after=unblocked_at, timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()
    pings = listener.times("WATCHDOG=1")
    assert not [t for t in pings if blocked_at + 0.05 < t < unblocked_at]
    # systemd would have seen a silence longer than WatchdogSec, and restarted the service.
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) > 1.4
    # Right after the loop came back its probe was 1.3 s late: that ping was skipped too.
    assert dog.skipped >= 1
    assert dog.max_seen_lag_s > 1.0


async def test_a_hung_gateway_is_killed_and_restarted(
    tmp_path: Path, listener: NotifyListener
) -> None:
    """The real gateway under a stand-in supervisor doing what systemd does."""
    port = free_port()
    config = write_config(tmp_path, port=port)
    watchdog_s = 1.0
    env = {**listener.env(watchdog_s=watchdog_s), HANG_HOOK_ENV: "1"}
    gateway = GatewayProcess(config, port, env=env)
    await gateway.start()
    assert gateway.process is not None
    await asyncio.to_thread(listener.wait_for, "READY=1", timeout=10)
    await asyncio.to_thread(listener.wait_for, "WATCHDOG=1", count=4, timeout=10)

    gateway.process.send_signal(signal.SIGUSR2)  # the test hook: the event loop blocks
    hung_at = time.monotonic()
    last_ping = await asyncio.to_thread(
        listener.wait_silence, "WATCHDOG=1", quiet_s=watchdog_s, timeout=10
    )
    assert last_ping < hung_at + 0.1  # no ping after the loop hung
    assert gateway.process.returncode is None  # the process lives on: only its loop is stuck
    # As systemd: WatchdogSec without a ping -> SIGABRT, then Restart=always.
    gateway.process.send_signal(signal.SIGABRT)
    assert await asyncio.wait_for(gateway.process.wait(), 10) == -signal.SIGABRT

    restarted_at = time.monotonic()
    await gateway.start()
    await asyncio.to_thread(listener.wait_for, "READY=1", after=restarted_at, timeout=10)
    await asyncio.to_thread(
        listener.wait_for, "WATCHDOG=1", count=2, after=restarted_at, timeout=10
    )
    assert await gateway.terminate() == 0
    stopping = listener.times("STOPPING=1")
    assert stopping
    assert stopping[-1] > restarted_at
