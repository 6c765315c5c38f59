"""The real gateway as a separate process, started as an operator starts it.

``smiley-gateway run --config FILE`` from this virtualenv, its output in
``gateway.log`` beside the configuration. A test may kill it with SIGKILL (a
crash) or stop it with SIGTERM (the gateway drains its outbox); a benchmark
reads its CPU time and memory by ``pid``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

GATEWAY_SCRIPT = str(Path(sys.executable).parent / "smiley-gateway")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0


class HarnessError(RuntimeError):
    """A process the harness started did not come up (the message says why)."""


def write_config(
    directory: Path,
    *,
    port: int,
    registry: str,
    extra: str = "",
    pipeline_depth: int | None = None,
) -> Path:
    """A gateway configuration in ``directory`` with its own data dir (``var``) and store.

    ``registry`` is the TOML of the terminals, written beside it; ``extra`` is
    appended (more sections); ``pipeline_depth`` sets ``tcp.pipeline_depth``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "terminals.toml").write_text(registry, encoding="utf-8")
    depth = "" if pipeline_depth is None else f"pipeline_depth = {pipeline_depth}\n"
    config = directory / "gateway.toml"
    config.write_text(
        f"""
[gateway]
data_dir = "var"
registry = "terminals.toml"
stats_interval_s = 60
log_format = "json"
log_level = "warning"
[tcp]
listen = "127.0.0.1:{port}"
{depth}[store]
url = "sqlite:///var/central.db"
{extra}
""",
        encoding="utf-8",
    )
    return config


def gateway_env(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment without SMILEY_* overrides (they would change the config), + ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SMILEY_")}
    return inherited | (extra or {})


class GatewayProcess:
    """``smiley-gateway run`` on ``config``, ready once its TCP ``port`` accepts."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.env = env  # added to this process's environment (NOTIFY_SOCKET, ...)
        self.process: asyncio.subprocess.Process | None = None
        self.log = config.parent / "gateway.log"

    async def __aenter__(self) -> GatewayProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.alive:
            await self.kill()

    @property
    def data_dir(self) -> Path:
        return self.config.parent / "var"

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                GATEWAY_SCRIPT, "run", "--config", str(self.config),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=gateway_env(self.env),
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise HarnessError(f"gateway exited at start:\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise HarnessError(f"gateway did not listen within {START_TIMEOUT_S:.0f} s")

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or power cut of the process."""
        process = self._running()
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 30)

    async def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:  # noqa: ASYNC109
        """SIGTERM (the gateway drains its outbox), then its exit status."""
        process = self._running()
        process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(process.wait(), timeout)

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _running(self) -> asyncio.subprocess.Process:
        if self.process is None:
            raise HarnessError("the gateway was not started")
        return self.process


def export_rows(config: Path, *extra: str) -> list[dict[str, Any]]:
    """``smiley-gateway export`` as an operator runs it, parsed."""
    result = subprocess.run(
        [GATEWAY_SCRIPT, "export", "--config", str(config), "--format", "ndjson", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]
