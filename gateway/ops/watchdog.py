"""systemd's notify protocol: READY, STOPPING and watchdog pings from the event loop.

systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket; a leading ``@`` is
the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``) to the service. Each message is one datagram of
``KEY=VALUE`` lines. Without ``NOTIFY_SOCKET`` every call here does nothing,
so the gateway runs the same outside systemd.

Why the pings come from the event loop: the gateway does all its work on one
loop; if that loop is blocked (a hung call, a busy loop in a bug) nothing is
served even though the process lives, and only a restart helps. A ping task
on the loop stops pinging exactly then, and systemd kills and restarts the
service after ``WatchdogSec``. A thread would keep pinging a dead loop. The
task also measures how late each of its wake-ups was (the loop's lag): a loop
that runs but is starved for longer than half the watchdog period skips its
ping too, and says so in the log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("gateway.watchdog")


class Notifier:
    """Sends sd_notify messages; a no-op when the service was not started by systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.sent = 0
        self._socket: socket.socket | None = None
        if address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd's environment describes (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``)."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process the watchdog is for; another one (a child) ignores it.
        if env.get("WATCHDOG_USEC", "").isdigit() and (pid is None or pid == str(os.getpid())):
            usec = int(env["WATCHDOG_USEC"]) or None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """systemd's watchdog timeout in seconds, or None when no watchdog is asked for."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 1e6

    def notify(self, *lines: str) -> bool:
        """Send one message; False (and a log line) if it could not be sent."""
        if self._socket is None or self.address is None:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]  # abstract namespace
        try:
            self._socket.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            # Never fatal: a missed READY or ping is systemd's to act on.
            log.warning("sd_notify_failed", error=str(exc), socket=self.address)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", f"MAINPID={os.getpid()}", *_status(status))

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def status(self, status: str) -> bool:
        return self.notify(*_status(status))

    def ping(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str) -> tuple[str, ...]:
    return (f"STATUS={text}",) if text else ()


class LoopWatchdog:
    """Pings systemd every half watchdog period, only while the event loop keeps time.

    ``healthy`` is an extra condition (for example: the outbox writer still
    runs); while it returns False no ping goes out either.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        interval_s: float,
        healthy: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self.period_s = interval_s / 2
        # A wake-up later than this means the loop was blocked or starved.
        self.max_lag_s = interval_s / 2
        self._healthy = healthy or (lambda: True)
        self._clock = clock
        self.pings = 0
        self.skipped = 0
        self.last_lag_s = 0.0
        self.max_seen_lag_s = 0.0

    async def run(self) -> None:
        self._ping()  # at once: the first period starts at READY
        while True:
            before = self._clock()
            await asyncio.sleep(self.period_s)
            lag = max(0.0, self._clock() - before - self.period_s)
            self.last_lag_s = lag
            self.max_seen_lag_s = max(self.max_seen_lag_s, lag)
            if lag > self.max_lag_s:
                self.skipped += 1
                log.error("event_loop_stalled", lag_s=round(lag, 3), max_lag_s=self.max_lag_s)
                continue
            if not self._healthy():
                self.skipped += 1
                log.error("watchdog_unhealthy", period_s=self.period_s)
                continue
            self._ping()

    def _ping(self) -> None:
        if self._notifier.ping():
            self.pings += 1


class LoopLagProbe:
    """The event loop's lag, measured by a task that asks to wake every ``period_s``.

    Used for metrics when there is no systemd watchdog to drive a LoopWatchdog.
    """

    def __init__(self, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self.last_lag_s = 0.0
        self.max_seen_lag_s = 0.0

    async def run(self) -> None:
        while True:
            before = self._clock()
            await asyncio.sleep(self.period_s)
            self.last_lag_s = max(0.0, self._clock() - before - self.period_s)
            self.max_seen_lag_s = max(self.max_seen_lag_s, self.last_lag_s)


HANG_HOOK_ENV = "SMILEY_TEST_HANG_ON_SIGUSR2"


def install_hang_hook(env: Mapping[str, str]) -> bool:
    """Test hook: with ``SMILEY_TEST_HANG_ON_SIGUSR2=1``, SIGUSR2 blocks the event loop.

    The handler runs on the loop and sleeps there, as a hung call would, while
    the process and its threads live on: the watchdog tests use it to see the
    pings stop. Off unless that variable is set; never set it in production.
    """
    if env.get(HANG_HOOK_ENV) != "1":
        return False
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR2, _hang)
    log.warning("test_hang_hook_installed", signal="SIGUSR2")
    return True


def _hang() -> None:
    time.sleep(3600)  # blocks the event loop on purpose: what the watchdog must catch
