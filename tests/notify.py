"""A stand-in for systemd's notify socket, for the watchdog and shutdown tests.

A real AF_UNIX datagram socket; a thread records each message with the time
it arrived, so a test can see a gap in the pings even while the event loop
under test (possibly the test's own) is blocked.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType


class NotifyListener:
    def __init__(self) -> None:
        # Unix socket paths are short (108 bytes): not under pytest's long tmp dirs.
        self._dir = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
        self.path = self._dir / "notify.sock"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self.path))
        self._socket.settimeout(0.05)
        self._messages: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._running:
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            arrived = time.monotonic()
            with self._changed:
                for line in data.decode().splitlines():
                    self._messages.append((arrived, line))
                self._changed.notify_all()

    def env(self, watchdog_s: float | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        return env

    def times(self, line: str) -> list[float]:
        with self._changed:
            return [t for t, text in self._messages if text == line]

    def lines(self) -> list[str]:
        with self._changed:
            return [text for _, text in self._messages]

    def wait_for(self, line: str, *, count: int = 1, after: float = 0.0, timeout: float) -> float:
        """Block until ``count`` messages ``line`` arrived after ``after``; the last one's time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [t for t, text in self._messages if text == line and t > after]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{count} x {line!r} not received in {timeout} s;"
                        f" got {[text for _, text in self._messages][-20:]}"
                    )
                self._changed.wait(remaining)

    def wait_silence(self, line: str, *, quiet_s: float, timeout: float) -> float:
        """Block until no ``line`` came for ``quiet_s``; the time the silence began."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = max(self.times(line), default=0.0)
            if time.monotonic() - last >= quiet_s:
                return last
            with self._changed:
                self._changed.wait(0.05)
        raise AssertionError(f"{line!r} kept coming for {timeout} s")

    def close(self) -> None:
        self._running = False
        self._socket.close()
        self._thread.join(5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
