"""``smiley-gateway demo``: the gateway on its configuration with a simulated fleet.

The gateway runs in this process, as ``smiley-gateway run`` would; the
simulated terminals run as processes of their own, as a store's terminals are
other machines: ``python -m firmware_sim tcp`` for the TCP terminals and
``python -m firmware_sim modem`` for the SMS terminals and the GSM modem they
reach (``[sms] port`` is pointed at its local socket: a demo never touches a
real modem; simulated time, an hour a second). The gateway never imports the
simulator; it reads the simulator's JSON report to check the central store.

The fleet's seq numbers persist in the data directory, so a second demo run
continues where the first stopped instead of resending old seqs.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.app import Gateway, build, run
from gateway.errors import GatewayError
from gateway.registry.config import Config, SmsSection, parse_listen
from gateway.registry.terminals import Terminal

DEMO_FAULTS = "split=0.05,crc=0.005,drop=0.001"
SIMULATOR = (sys.executable, "-m", "firmware_sim")
SIM_START_TIMEOUT_S = 30.0
ACK_WAIT_S = 120.0
MODEM_DRAIN_S = 60.0
_ACKED = re.compile(r"\backed=(\d+)")


class SimulatorFailed(GatewayError):
    """A simulator process did not start or did not report (the message says why)."""


class Simulator:
    """``python -m firmware_sim ARGS`` as a child process: its progress lines, its JSON report."""

    def __init__(self, name: str, args: Sequence[str]) -> None:
        self.name = name
        self.args = tuple(args)
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self.ready = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._reading: asyncio.Task[None] | None = None
        self._reported = False

    async def start(self, *, ready_word: str | None = None) -> None:
        """Start it; with ``ready_word``, wait for the progress line that says it."""
        self._process = await asyncio.create_subprocess_exec(
            *SIMULATOR, *self.args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._reading = asyncio.create_task(self._read_progress(ready_word))
        if ready_word is None:
            return
        waiting = asyncio.create_task(self.ready.wait())
        await asyncio.wait(  # ready, or its stderr closed (it exited)
            (waiting, self._reading),
            timeout=SIM_START_TIMEOUT_S,
            return_when=asyncio.FIRST_COMPLETED,
        )
        waiting.cancel()
        if not self.ready.is_set():
            raise SimulatorFailed(f"the simulated {self.name} did not start:\n{self.tail()}")

    @property
    def last_line(self) -> str:
        return self.lines[-1] if self.lines else ""

    def tail(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        """SIGTERM: the simulator stops its fleet and reports (see ``--drain``)."""
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()

    async def report(self, timeout_s: float) -> dict[str, Any]:
        """The JSON report it prints when it is done (it exits after)."""
        process = self._running()
        assert process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                lines: list[bytes] = []  # megabytes with --include-records: no += here
                while line := await process.stdout.readline():
                    lines.append(line)
                    if line.rstrip() == b"}":  # the end of its indented JSON
                        break
        except TimeoutError:
            raise SimulatorFailed(
                f"the simulated {self.name} did not report:\n{self.tail()}"
            ) from None
        try:
            report: dict[str, Any] = json.loads(b"".join(lines))
        except ValueError:
            raise SimulatorFailed(
                f"the simulated {self.name} reported no JSON:\n{self.tail()}"
            ) from None
        self._reported = True
        return report

    async def close(self) -> None:
        """Close its stdin, where a modem with ``--stay`` waits after its report; else kill it."""
        process = self._process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10 if self._reported else 0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)

    def _running(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise SimulatorFailed(f"the simulated {self.name} was not started")
        return self._process

    async def _read_progress(self, ready_word: str | None) -> None:
        stderr = self._running().stderr
        assert stderr is not None
        async for raw in stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self.lines.append(line)
            if ready_word is not None and ready_word in line:
                self.ready.set()


async def run_demo(
    config: Config, *, terminals: int, presses: int, rate: float, sms_terminals: int = 0
) -> int:
    if config.tcp is None:
        print("demo: the configuration has no [tcp] section", file=sys.stderr)
        return 2
    modem_url = f"socket://127.0.0.1:{_free_port()}" if sms_terminals > 0 else None
    if modem_url is not None:
        sms = replace(config.sms or SmsSection(), port=modem_url, poll_interval_s=5.0)
        config = replace(config, sms=sms)
    gateway = await build(config)
    chosen = list(gateway.registry.terminals.values())[:terminals]
    by_sms = chosen[len(chosen) - sms_terminals :] if modem_url is not None else []
    by_tcp = [t for t in chosen if t not in by_sms]
    if not by_tcp:
        print("demo: the registry has no terminals ([gateway] registry)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="smiley-demo-") as work:
        modem = None
        if modem_url is not None and by_sms:
            modem = Simulator("modem", _modem_args(modem_url, _registry(work, "sms", by_sms)))
        try:
            return await _run(config, gateway, modem, _registry(work, "tcp", by_tcp),
                              presses=presses, rate=rate, tcp_terminals=len(by_tcp),
                              sms_terminals=len(by_sms))  # fmt: skip
        except SimulatorFailed as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
        finally:
            if modem is not None:
                await modem.close()
    raise AssertionError("unreachable")


async def _run(
    config: Config,
    gateway: Gateway,
    modem: Simulator | None,
    tcp_registry: Path,
    *,
    presses: int,
    rate: float,
    tcp_terminals: int,
    sms_terminals: int,
) -> int:
    assert config.tcp is not None
    if modem is not None:  # up before the gateway opens it
        await modem.start(ready_word="ready at")
    stop = asyncio.Event()
    serving = asyncio.create_task(run(gateway, stop=stop))
    try:
        await gateway.started.wait()
        host, _ = parse_listen("tcp.listen", config.tcp.listen)
        assert gateway.tcp is not None
        args = _fleet_args(host, gateway.tcp.port, tcp_registry, config, presses, rate)
        fleet = Simulator("TCP terminals", args)
        print(
            f"smiley-gateway demo: {tcp_terminals} simulated terminals -> tcp"
            f" {config.tcp.listen}, {presses} presses at {rate}/s each; {sms_terminals} SMS"
            f" terminals -> a simulated modem, an hour a second; store {config.store_url()}",
            flush=True,
        )
        started = time.monotonic()
        await fleet.start()
        summary = asyncio.create_task(_print_summary(gateway, fleet, started))
        try:
            pressing_s = presses / (rate * tcp_terminals) if rate > 0 else 0.0
            fleet_report = await fleet.report(pressing_s + ACK_WAIT_S + 60)
            modem_report = None
            if modem is not None:
                modem.stop()
                modem_report = await modem.report(MODEM_DRAIN_S + 30)
            await gateway.forwarder.drain()
        finally:
            summary.cancel()
            await asyncio.gather(summary, return_exceptions=True)
            await fleet.close()
        print(_line(gateway, fleet, started), flush=True)
        stored = await _stored(gateway)
    finally:
        stop.set()
        await serving
    return _verdict(fleet_report, modem_report, stored, fleet)


def _verdict(
    fleet_report: dict[str, Any],
    modem_report: dict[str, Any] | None,
    stored: tuple[set[tuple[int, int]], dict[tuple[int, int], list[int]]],
    fleet: Simulator,
) -> int:
    presses, hours = stored
    if not fleet_report.get("all_acked"):
        print(f"demo: not every press was ACKed:\n{fleet.tail()}", file=sys.stderr)
        return 1
    acked = set(_acked(fleet_report))
    missing = len(acked - presses)
    if missing:
        print(f"demo: {missing} ACKed presses are missing from the store", file=sys.stderr)
        return 1
    print(f"demo: all {len(acked)} ACKed presses are in the central store, each once.")
    if modem_report is None:
        return 0
    if not modem_report["modem"]["all_taken"]:
        print("demo: the gateway did not take every SMS off the modem", file=sys.stderr)
        return 1
    expected = {
        (int(tid), int(hour)): tuple(counts)
        for key, counts in modem_report["sms"]["expected"].items()
        for tid, hour in [key.split(":")]
    }
    wrong = sum(tuple(hours.get(k, [0, 0, 0, 0])) != v for k, v in expected.items())
    if wrong:
        print(f"demo: {wrong} of {len(expected)} SMS hours differ in the store", file=sys.stderr)
        return 1
    print(
        f"demo: {modem_report['sms']['batches']} SMS batches, {len(expected)} terminal-hours,"
        " in the central store with the counts of their latest batch."
    )
    return 0


def _fleet_args(  # noqa: PLR0917
    host: str, port: int, registry: Path, config: Config, presses: int, rate: float
) -> list[str]:
    return [
        "tcp", "--host", host, "--port", str(port), "--registry", str(registry),
        "--presses", str(presses), "--rate", str(rate), "--seed", str(int(time.time())),
        "--faults", DEMO_FAULTS, "--state-dir", str(config.data_dir / "firmware_sim"),
        "--fleet-name", "demo", "--include-records", "--wait", str(ACK_WAIT_S),
        "--log-level", "error",
    ]  # fmt: skip


def _modem_args(url: str, registry: Path) -> list[str]:
    return [
        "modem", "--listen", url, "--profile", "quectel", "--terminals-from", str(registry),
        "--speed", "3600", "--drain", str(MODEM_DRAIN_S), "--stay", "--log-level", "error",
    ]  # fmt: skip


def _registry(directory: str, name: str, terminals: Iterable[Terminal]) -> Path:
    """The simulator's registry: these terminals' ids and keys (private to this user)."""
    path = Path(directory) / f"{name}-terminals.toml"
    path.touch(mode=0o600)
    path.write_text(
        "".join(f'[[terminal]]\nid = {t.id}\nkey = "{t.key.hex()}"\n' for t in terminals),
        encoding="utf-8",
    )
    return path


def _free_port() -> int:
    """A loopback port for the simulated modem, which the gateway's config must name first."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _acked(report: dict[str, Any]) -> Iterable[tuple[int, int]]:
    for terminal_id, terminal in report["terminals"].items():
        for seq, record in terminal["records"].items():
            if record["acked"]:
                yield int(terminal_id), int(seq)


async def _stored(
    gateway: Gateway,
) -> tuple[set[tuple[int, int]], dict[tuple[int, int], list[int]]]:
    """The store's (terminal, seq) of each press, and each terminal-hour's counts by button."""
    presses: set[tuple[int, int]] = set()
    hours: dict[tuple[int, int], list[int]] = {}
    async for p in gateway.store.presses(None, None):
        if p.precision == "hour":
            hours.setdefault((p.terminal_id, p.occurred_at), [0, 0, 0, 0])[p.button - 1] = p.count
        else:
            presses.add((p.terminal_id, p.seq))
    return presses, hours


async def _print_summary(gateway: Gateway, fleet: Simulator, started: float) -> None:
    while True:
        await asyncio.sleep(1)
        print(_line(gateway, fleet, started), flush=True)


def _line(gateway: Gateway, fleet: Simulator, started: float) -> str:
    counters = gateway.ingest.counters
    committed = gateway.outbox.committed_presses
    elapsed = time.monotonic() - started
    tcp = gateway.tcp
    sms = gateway.sms.counters.batches if gateway.sms is not None else 0
    acked = _ACKED.search(fleet.last_line)
    return (
        f"{elapsed:6.1f}s  connected={tcp.connections if tcp else 0:<4}"
        f" committed={committed:<7} rate={committed / max(elapsed, 1e-9):7.1f}/s"
        f" forwarded={gateway.forwarder.forwarded:<7}"
        f" quarantined={counters.rejected_records + counters.refused_frames:<4}"
        f" sim_acked={acked.group(1) if acked else '-':<7} sms_batches={sms:<5}"
    )
