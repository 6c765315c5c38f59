"""``smiley-gateway``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from gateway.app import build, run
from gateway.errors import ConfigError, GatewayError
from gateway.logs import configure_logging
from gateway.ops.commands import add_commands as add_operations_commands
from gateway.ops.export import FORMATS, export, parse_time
from gateway.registry.config import Config, load_config
from gateway.registry.mqtt_credentials import write_password_file
from gateway.registry.terminals import load_registry
from gateway.stores import open_store
from gateway.transports.web_qr import add_web_commands


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except GatewayError as exc:
        print(f"smiley-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smiley-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run_cmd = commands.add_parser("run", help="run the gateway")
    _config_arg(run_cmd)
    run_cmd.set_defaults(func=_run)

    terminals = commands.add_parser("terminals", help="manage the terminal registry")
    terminal_commands = terminals.add_subparsers(dest="terminals_command", required=True)
    imp = terminal_commands.add_parser("import", help="import a registry TOML into the store")
    imp.add_argument("file", type=Path)
    _config_arg(imp)
    imp.set_defaults(func=_import_terminals)

    exp = commands.add_parser("export", help="export stored presses (or the quarantine)")
    _config_arg(exp)
    exp.add_argument("--format", choices=FORMATS, default="ndjson")
    exp.add_argument("--since", type=parse_time, help="ISO 8601 time or Unix seconds")
    exp.add_argument("--until", type=parse_time, help="ISO 8601 time or Unix seconds")
    exp.add_argument("--output", type=Path, help="file to write (default: standard output)")
    exp.add_argument("--rejected", action="store_true", help="export the quarantine instead")
    exp.set_defaults(func=_export)

    mqtt = commands.add_parser("mqtt", help="MQTT broker setup")
    mqtt_commands = mqtt.add_subparsers(dest="mqtt_command", required=True)
    passwords = mqtt_commands.add_parser(
        "passwords", help="write a Mosquitto password file for every terminal and the gateway"
    )
    _config_arg(passwords)
    passwords.add_argument("--output", type=Path, required=True)
    passwords.set_defaults(func=_mqtt_passwords)

    migrate = commands.add_parser("migrate", help="bring the central store's schema up to date")
    _config_arg(migrate)
    migrate.set_defaults(func=_migrate)

    _api_commands(commands)

    demo = commands.add_parser("demo", help="run the gateway with a simulated fleet")
    _config_arg(demo)
    demo.add_argument("--terminals", type=int, default=50)
    demo.add_argument("--presses", type=int, default=10000)
    demo.add_argument("--rate", type=float, default=4.0, help="presses per second per terminal")
    demo.add_argument(
        "--sms-terminals",
        type=int,
        default=5,
        help="of the terminals, this many send hourly counts by SMS to a simulated modem",
    )
    demo.set_defaults(func=_demo)

    add_operations_commands(commands)  # check, status (gateway/ops/commands.py)
    add_web_commands(commands)  # web qr (gateway/transports/web_qr.py)
    return parser


def _api_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = commands.add_parser("api", help="serve the read-only query API ([api] section)")
    _config_arg(api)
    api.set_defaults(func=_api)

    tokens = commands.add_parser("tokens", help="manage query API credentials")
    token_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    create = token_commands.add_parser("create", help="make a credential; prints its token once")
    _config_arg(create)
    create.add_argument("--company", required=True, help="the company the token may read")
    create.add_argument("--scope", type=int, help="a location id: only its subtree is visible")
    create.add_argument("--name", help="a label for the credential")
    create.add_argument(
        "--expires", help="YYYY-MM-DD (expires at 00:00 UTC that day) or an ISO 8601 time"
    )
    create.set_defaults(func=_tokens_create)
    listing = token_commands.add_parser("list", help="list credentials (never their tokens)")
    _config_arg(listing)
    listing.set_defaults(func=_tokens_list)
    revoke = token_commands.add_parser("revoke", help="revoke a credential by client id")
    _config_arg(revoke)
    revoke.add_argument("client_id")
    revoke.set_defaults(func=_tokens_revoke)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="configuration TOML (keys overridable by SMILEY_* variables)"
    )


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    configure_logging(config.gateway.log_format, config.gateway.log_level)
    return config


def _run(args: argparse.Namespace) -> int:
    config = _load(args)
    asyncio.run(_serve(config))
    return 0


async def _serve(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = await build(config)
    await run(gateway, stop=stop)


def _api(args: argparse.Namespace) -> int:
    from gateway.api import serve_api  # noqa: PLC0415 - the web stack only when serving

    config = _load(args)
    if config.api is None:
        raise ConfigError("api", "add an [api] section (listen, rate_limit) to serve the API")
    api_config = config

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_api(api_config, stop)

    asyncio.run(go())
    return 0


def _tokens_create(args: argparse.Namespace) -> int:
    from gateway.api.cli import create  # noqa: PLC0415

    return create(_load(args), args.company, args.scope, args.name, args.expires)


def _tokens_list(args: argparse.Namespace) -> int:
    from gateway.api.cli import list_all  # noqa: PLC0415

    return list_all(_load(args))


def _tokens_revoke(args: argparse.Namespace) -> int:
    from gateway.api.cli import revoke  # noqa: PLC0415

    return revoke(_load(args), args.client_id)


def _import_terminals(args: argparse.Namespace) -> int:
    config = _load(args)
    registry = load_registry(args.file)

    async def go() -> None:
        store = await open_store(config.store_url())
        try:
            summary = await store.import_registry(registry)
        finally:
            await store.close()
        print(
            f"imported {len(registry.terminals)} terminals, {len(registry.locations)} locations,"
            f" {len(registry.surveys)} surveys: {summary.added} added, {summary.changed} changed,"
            f" {summary.unchanged} unchanged"
        )

    asyncio.run(go())
    return 0


def _export(args: argparse.Namespace) -> int:
    config = _load(args)

    async def go(out: IO[str]) -> int:
        store = await open_store(config.store_url())
        progress = None
        if sys.stderr.isatty():
            from tqdm import tqdm  # noqa: PLC0415 - only on a terminal

            progress = tqdm(unit=" rows", file=sys.stderr)
        try:
            return await export(
                store,
                out,
                fmt=args.format,
                since=args.since,
                until=args.until,
                rejected=args.rejected,
                progress=progress,
            )
        finally:
            if progress is not None:
                progress.close()
            await store.close()

    with contextlib.ExitStack() as stack:
        out: IO[str] = sys.stdout
        if args.output is not None:
            out = stack.enter_context(args.output.open("w", encoding="utf-8", newline=""))
        asyncio.run(go(out))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    config = _load(args)

    async def go() -> None:
        store = await open_store(config.store_url())  # opening applies the migrations
        await store.close()

    asyncio.run(go())
    print("the central store's schema is up to date")
    return 0


def _mqtt_passwords(args: argparse.Namespace) -> int:
    config = _load(args)
    if config.gateway.registry is None:
        raise ConfigError("gateway.registry", "needed to know the terminals")
    if config.mqtt is None or not config.mqtt.password:
        raise ConfigError("mqtt.password", "the gateway's own broker password is needed")
    registry = load_registry(config.path(config.gateway.registry))
    written = write_password_file(args.output, registry, config.mqtt.password)
    print(f"wrote {written} users to {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo  # noqa: PLC0415 - only the demo needs it

    config = load_config(args.config)
    # The demo's own summary is the show; logs only say when something is wrong.
    configure_logging(config.gateway.log_format, "warning")
    result: int = asyncio.run(
        run_demo(
            config,
            terminals=args.terminals,
            presses=args.presses,
            rate=args.rate,
            sms_terminals=args.sms_terminals,
        )
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
