"""Command line: ``python -m firmware_sim tcp --host H --port P --registry FILE ...``,
or ``python -m firmware_sim mqtt --host BROKER --port P --registry FILE ...``,
or ``python -m firmware_sim modem --listen socket://127.0.0.1:7701 --terminals-from FILE``
(a simulated GSM modem that SMS terminals deliver HOURLY batches to: ``firmware_sim.modem_cli``).

Prints a one-line summary every second on stderr, then the final report as JSON
on stdout (and to ``--report FILE``). Exit status 0 when every press made was
ACKed, 1 when not, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from firmware_sim.backoff import BackoffOptions
from firmware_sim.errors import NotAllAcked, SimulatorError, TerminalStopped
from firmware_sim.faults import FaultOptions, ScheduledFault
from firmware_sim.fleet import Fleet, FleetOptions
from firmware_sim.modem_cli import add_modem_command, main_modem
from firmware_sim.mqtt import MqttLinkOptions, PasswordSource
from firmware_sim.mqtt_client import MqttProtocol
from firmware_sim.patterns import Child, LunchQueue, Pattern, Steady
from firmware_sim.registry import load_registry
from firmware_sim.tcp import LinkOptions

PATTERNS = ("steady", "lunch", "child", "mixed")
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tcp = commands.add_parser("tcp", help="simulated terminals over TCP")
    tcp.add_argument("--host", default="127.0.0.1")
    tcp.add_argument("--port", type=int, required=True)
    _add_fleet_arguments(tcp)
    _add_tls_arguments(tcp, "the gateway")
    tcp.add_argument("--server-hostname", help="TLS name to expect (default: --host)")
    tcp.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    mqtt = commands.add_parser(
        "mqtt",
        help="simulated terminals over MQTT, each its own client of the broker",
        description="Each terminal connects as client smiley-terminal-{id} with username {id},"
        " publishes to smiley/v1/{id}/up and subscribes to smiley/v1/{id}/down."
        " Split writes (--faults split=...) do not apply to MQTT and are ignored.",
    )
    mqtt.add_argument("--host", default="127.0.0.1", help="the broker")
    mqtt.add_argument("--port", type=int, default=1883)
    _add_fleet_arguments(mqtt)
    mqtt.add_argument(
        "--mqtt-version", choices=[p.value for p in MqttProtocol], default=MqttProtocol.V5.value
    )
    mqtt.add_argument(
        "--session-expiry", type=int, default=3600, help="MQTT 5 session expiry, seconds"
    )
    mqtt.add_argument("--password", help="the MQTT password of every terminal")
    mqtt.add_argument(
        "--passwords", type=Path, help='JSON object of MQTT passwords by id: {"1001": "..."}'
    )
    mqtt.add_argument("--topic-prefix", default="smiley/v1", help="topics under this prefix")
    _add_tls_arguments(mqtt, "the broker")
    mqtt.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    add_modem_command(commands)
    return parser


def _add_fleet_arguments(command: argparse.ArgumentParser) -> None:
    """What a fleet does, the same on every transport."""
    command.add_argument(
        "--registry", type=Path, required=True, help="TOML with [[terminal]] id, key"
    )
    command.add_argument("--terminals", type=int, help="use the first N terminals (default: all)")
    command.add_argument("--presses", type=int, help="stop after this many presses fleet-wide")
    command.add_argument("--duration", type=float, help="stop pressing after this many seconds")
    command.add_argument(
        "--rate", type=float, default=1.0, help="presses per second per terminal (0: flat out)"
    )
    command.add_argument("--pattern", choices=PATTERNS, default="steady")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument(
        "--faults",
        type=_argument(FaultOptions.parse),
        default=FaultOptions(),
        help="probabilities, e.g. split=0.1,garbage=0.01,crc=0.05,drop=0.02,power=0.001",
    )
    command.add_argument(
        "--fault-at",
        type=_argument(ScheduledFault.parse),
        action="append",
        default=[],
        metavar="SECONDS:FAULT[:ID]",
        help="a fault at a time after the start (repeatable), e.g. 5:power_loss",
    )
    command.add_argument("--state-dir", type=Path, help="keep seqs and pending records here")
    command.add_argument("--fleet-name", default="fleet", help="state file name in --state-dir")
    command.add_argument("--report", type=Path, help="also write the final JSON report here")
    command.add_argument(
        "--include-records", action="store_true", help="every record in the report"
    )
    command.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for the last ACKs (default 60)"
    )
    command.add_argument("--window", type=int, default=4)
    command.add_argument("--max-records", type=int, default=50)
    command.add_argument(
        "--heartbeat", type=float, default=60.0, help="heartbeat interval, seconds"
    )
    command.add_argument(
        "--answer-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for an answer (TCP: then reconnect; MQTT: then publish again)",
    )
    command.add_argument("--max-backoff", type=float, default=30.0, help="reconnect backoff cap")


def _add_tls_arguments(command: argparse.ArgumentParser, peer: str) -> None:
    command.add_argument("--tls", action="store_true", help="connect with TLS")
    command.add_argument("--cafile", type=Path, help=f"CA bundle to verify {peer} (implies --tls)")
    command.add_argument(
        "--insecure", action="store_true", help=f"TLS without verifying {peer}'s certificate"
    )


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` for argparse: its ValueError message becomes the usage error."""

    def parse_argument(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse_argument


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    if args.command == "modem":
        return main_modem(parser, args)
    try:
        keys = load_registry(args.registry)
        if args.terminals is not None:
            keys = dict(list(keys.items())[: args.terminals])
        if not keys:
            parser.error("the registry has no terminals")
        link = _link_options(args) if args.command == "tcp" else _mqtt_link_options(args)
        options = _fleet_options(args)
    except (SimulatorError, ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(run_fleet(keys, link, options, args))
    except KeyboardInterrupt:
        return 130


async def run_fleet(
    keys: dict[int, bytes],
    link: LinkOptions | MqttLinkOptions,
    options: FleetOptions,
    args: argparse.Namespace,
) -> int:
    loop = asyncio.get_running_loop()
    started = loop.time()
    fleet = Fleet(keys, link, options)
    all_acked = False
    try:
        async with fleet, asyncio.TaskGroup() as group:
            ticker = group.create_task(_print_progress(fleet, started))
            try:
                await fleet.run(presses=args.presses, duration=args.duration)
                await fleet.wait_all_acked(args.wait)
                all_acked = True
            except (NotAllAcked, TerminalStopped) as exc:
                print(f"not all presses were ACKed: {exc}", file=sys.stderr)
            finally:
                ticker.cancel()
    finally:
        print(fleet.report.live_line(loop.time() - started), file=sys.stderr)
        _write_report(fleet, args)
    return 0 if all_acked else 1


async def _print_progress(fleet: Fleet, started: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(1.0)
        print(fleet.report.live_line(loop.time() - started), file=sys.stderr, flush=True)


def _write_report(fleet: Fleet, args: argparse.Namespace) -> None:
    text = json.dumps(fleet.report.summary(include_records=args.include_records), indent=2)
    if args.report is not None:
        args.report.write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)


run_tcp = run_fleet
"""The name ``run_fleet`` had when the simulator spoke only TCP."""


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.cafile or args.insecure):
        return None
    context = ssl.create_default_context(
        cafile=str(args.cafile) if args.cafile is not None else None
    )
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _link_options(args: argparse.Namespace) -> LinkOptions:
    return LinkOptions(
        host=args.host,
        port=args.port,
        ssl=_tls_context(args),
        server_hostname=args.server_hostname,
        window=args.window,
        max_records=args.max_records,
        heartbeat_interval=args.heartbeat,
        answer_timeout=args.answer_timeout,
        reconnect=BackoffOptions(initial=min(0.5, args.max_backoff), maximum=args.max_backoff),
    )


def _mqtt_link_options(args: argparse.Namespace) -> MqttLinkOptions:
    password: PasswordSource = None
    if args.passwords is not None:
        password = _load_passwords(args.passwords)
    elif args.password is not None:
        shared: str = args.password

        def password_of(_terminal_id: int) -> str:
            return shared

        password = password_of
    return MqttLinkOptions(
        host=args.host,
        port=args.port,
        protocol=MqttProtocol(args.mqtt_version),
        password=password,
        ssl=_tls_context(args),
        session_expiry=args.session_expiry,
        topic_prefix=args.topic_prefix,
        window=args.window,
        max_records=args.max_records,
        heartbeat_interval=args.heartbeat,
        answer_timeout=args.answer_timeout,
        max_answer_timeout=max(300.0, args.answer_timeout),
        reconnect=BackoffOptions(initial=min(0.5, args.max_backoff), maximum=args.max_backoff),
    )


def _load_passwords(path: Path) -> dict[int, str]:
    """Terminal id to MQTT password from a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: need a JSON object of terminal id to password string")
    try:
        return {int(key): value for key, value in data.items()}
    except ValueError:
        raise ValueError(f"{path}: every key must be a terminal id in decimal") from None


def _fleet_options(args: argparse.Namespace) -> FleetOptions:
    faults = dataclasses.replace(args.faults, schedule=tuple(args.fault_at))
    pattern: Pattern
    if args.pattern == "lunch":
        pattern = LunchQueue(rate=args.rate / 10, rush_rate=args.rate * 4)
    elif args.pattern == "child":
        pattern = Child()
    else:
        pattern = Steady(args.rate)
    return FleetOptions(
        pattern=pattern,
        pattern_of=MixedPattern(args.rate) if args.pattern == "mixed" else None,
        seed=args.seed,
        faults=faults,
        state_dir=args.state_dir,
        name=args.fleet_name,
    )


class MixedPattern:
    """Most terminals steady; every 10th by a lunch queue; every 25th has a child nearby."""

    def __init__(self, rate: float) -> None:
        self.lunch = LunchQueue(rate=rate / 10, rush_rate=rate * 4)
        self.child = Child()

    def __call__(self, terminal_id: int) -> Pattern | None:
        if terminal_id % 25 == 0:
            return self.child
        if terminal_id % 10 == 0:
            return self.lunch
        return None


def _configure_logging(level: str) -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
