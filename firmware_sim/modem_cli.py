"""``python -m firmware_sim modem``: a simulated GSM modem fed by simulated SMS terminals.

It serves the modem on a TCP port (pyserial ``socket://``) or a pty, delivers the
terminals' HOURLY batches to it in simulated time, and prints the report (the
counts the store should hold per terminal and hour, the modem's counters) as
JSON on stdout when the fleet stops: ``--hours`` reached, SIGTERM, or ^C.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from firmware_sim.errors import SimulatorError
from firmware_sim.modem_profiles import PRESETS, ModemProfile
from firmware_sim.modem_server import ModemServer, PtyModemServer, SocketModemServer
from firmware_sim.patterns import Steady
from firmware_sim.registry import load_registry
from firmware_sim.sms_pdu import Form
from firmware_sim.sms_terminal import SmsFleet, SmsFleetOptions, SmsTerminalOptions, mixed_options


def _profile(text: str) -> ModemProfile:
    try:
        return ModemProfile.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_modem_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    modem = commands.add_parser(
        "modem",
        help="a simulated GSM modem, fed HOURLY batches by simulated SMS terminals",
        description="Serves a simulated AT modem on a TCP port (pyserial socket://) or a"
        " pseudo-terminal, and delivers SMS from simulated terminals to it in simulated"
        " time. Prints progress on stderr and the report (expected counts per terminal"
        " and hour, modem counters) as JSON on stdout when done or interrupted.",
    )
    modem.add_argument(
        "--listen", default="socket://127.0.0.1:7701", help="socket://HOST:PORT, or 'pty'"
    )
    modem.add_argument("--pty-link", type=Path, help="symlink to the pty slave (implies pty)")
    modem.add_argument(
        "--profile",
        type=_profile,
        default=ModemProfile(),
        help=f"NAME[,switch=value...], NAME one of {', '.join(PRESETS)};"
        " e.g. huawei,sim_busy_s=5,capacity=10",
    )
    modem.add_argument("--pin", help="the SIM needs this PIN (AT+CPIN=...)")
    modem.add_argument(
        "--terminals-from", type=Path, required=True, help="registry TOML ([[terminal]] id, key)"
    )
    modem.add_argument("--terminals", type=int, help="use the first N terminals (default: all)")
    modem.add_argument("--hours", type=float, help="simulated hours to run (default: until ^C)")
    modem.add_argument(
        "--speed", type=float, default=3600.0, help="simulated seconds per second (default 3600)"
    )
    modem.add_argument("--presses-per-hour", type=float, default=36.0, help="per terminal")
    modem.add_argument("--notices-per-day", type=float, default=1.0, help="fleet-wide")
    modem.add_argument("--form", choices=("mixed", *(f.value for f in Form)), default="mixed")
    modem.add_argument("--seed", type=int, default=0)
    modem.add_argument("--state-dir", type=Path, help="keep batch_seq here across runs")
    modem.add_argument("--report", type=Path, help="also write the final JSON report here")
    modem.add_argument(
        "--linger", type=float, default=0.0, help="keep the modem up this long after the fleet"
    )
    modem.add_argument(
        "--drain",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the fleet stops (--hours reached, or SIGTERM), wait up to this long until"
        " the gateway took every message off the modem (report: all_taken)",
    )
    modem.add_argument(
        "--stay",
        action="store_true",
        help="after the report, keep the modem up until stdin closes (so that the caller"
        " can stop its gateway first, which would otherwise see the modem go away)",
    )
    modem.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )


def main_modem(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        keys = load_registry(args.terminals_from)
        if args.terminals is not None:
            keys = dict(list(keys.items())[: args.terminals])
        if not keys:
            parser.error("the registry has no terminals")
        server = _modem_server(args)
        if args.form == "mixed":
            options_of: Callable[[int], SmsTerminalOptions] = mixed_options
        else:
            chosen = SmsTerminalOptions(form=Form(args.form))

            def options_of(_terminal_id: int) -> SmsTerminalOptions:
                return chosen

        options = SmsFleetOptions(
            pattern=Steady(args.presses_per_hour / 3600),
            options_of=options_of,
            seed=args.seed,
            notices_per_day=args.notices_per_day,
            state_path=args.state_dir / "sms-fleet.json" if args.state_dir else None,
        )
    except (SimulatorError, ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_run_modem(server, keys, options, args))
    except KeyboardInterrupt:
        return 130
    return 0


def _modem_server(args: argparse.Namespace) -> ModemServer:
    if args.pty_link is not None or args.listen == "pty":
        return PtyModemServer(args.profile, link=args.pty_link, pin=args.pin)
    if not args.listen.startswith("socket://"):
        raise ValueError(f"--listen {args.listen!r}: expected socket://HOST:PORT or pty")
    host, _, port = args.listen[len("socket://") :].rpartition(":")
    return SocketModemServer(args.profile, host=host or "127.0.0.1", port=int(port), pin=args.pin)


async def _run_modem(
    server: ModemServer,
    keys: dict[int, bytes],
    options: SmsFleetOptions,
    args: argparse.Namespace,
) -> None:
    async with server:
        where = server.url if isinstance(server, SocketModemServer) else ""
        if isinstance(server, PtyModemServer):
            where = f"{server.path} ({server.slave_path})"
        print(f"modem {server.profile.name} ready at {where}", file=sys.stderr, flush=True)
        fleet = SmsFleet(keys, server.deliver, options)
        try:
            async with asyncio.TaskGroup() as group:
                ticker = group.create_task(_print_modem_progress(fleet, server))
                try:
                    await _until_sigterm(fleet.run(hours=args.hours, speed=args.speed))
                    await _drained(server, args.drain)
                    await asyncio.sleep(args.linger)
                finally:
                    ticker.cancel()
        finally:
            text = json.dumps(
                {
                    "sms": fleet.report.summary(),
                    "modem": dataclasses.asdict(server.counters)
                    | {
                        "stored_now": server.stored_now,
                        "held": len(server.core.held),
                        "all_taken": server.all_taken,
                    },
                },
                indent=2,
            )
            if args.report is not None:
                args.report.write_text(text + "\n", encoding="utf-8")
            print(text, flush=True)
        if args.stay:
            await _stdin_closed()


async def _until_sigterm(work: Coroutine[Any, Any, object]) -> None:
    """Run ``work`` until it ends or SIGTERM comes, which stops it: a stop, not an error."""
    loop = asyncio.get_running_loop()
    running = asyncio.ensure_future(work)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        running.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        await running
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not stopped or (current is not None and current.cancelling()):
            raise  # cancelled from outside: pass it on
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _stdin_closed() -> None:
    """Until whoever started this process closes its end of stdin."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while await reader.read(4096):
            pass
    finally:
        transport.close()


async def _drained(server: ModemServer, patience_s: float) -> None:
    """Until the gateway took (read and deleted) every message the modem got, or timeout."""
    deadline = asyncio.get_running_loop().time() + patience_s
    while not server.all_taken and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def _print_modem_progress(fleet: SmsFleet, server: ModemServer) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        await asyncio.sleep(1.0)
        c = server.counters
        print(
            f"{loop.time() - started:7.1f}s sim_time={int(fleet.now)}"
            f" batches={len(fleet.report.batches)} pdus={fleet.report.pdus_delivered}"
            f" delivered={c.delivered} stored_now={server.stored_now}"
            f" held={len(server.core.held)} notices={len(fleet.report.notices)}"
            f" resets={c.resets}",
            file=sys.stderr,
            flush=True,
        )
