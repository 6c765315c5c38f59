"""``smiley-gateway demo``: the gateway on its configuration with a simulated fleet.

The fleet's seq numbers persist in the data directory, so a second demo run
continues where the first stopped instead of resending old seqs. Some
terminals send hourly counts by SMS instead, through a simulated modem the
demo starts on a local socket (``[sms] port`` is pointed at it: a demo never
touches a real modem), in simulated time: an hour a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import replace

from firmware_sim import Fleet, FleetOptions, LinkOptions, Steady
from firmware_sim.faults import FaultOptions
from firmware_sim.modem_profiles import ModemProfile
from firmware_sim.modem_server import SocketModemServer
from firmware_sim.sms_terminal import SmsFleet
from gateway.app import Gateway, build, run
from gateway.registry.config import Config, SmsSection, parse_listen

DEMO_FAULTS = FaultOptions(split_write=0.05, corrupt_crc=0.005, drop=0.001)


async def run_demo(
    config: Config, *, terminals: int, presses: int, rate: float, sms_terminals: int = 0
) -> int:
    if config.tcp is None:
        print("demo: the configuration has no [tcp] section", file=sys.stderr)
        return 2
    async with contextlib.AsyncExitStack() as stack:
        modem = None
        if sms_terminals > 0:
            modem = await stack.enter_async_context(
                SocketModemServer(ModemProfile.preset("quectel"))
            )
            sms = replace(config.sms or SmsSection(), port=modem.url, poll_interval_s=5.0)
            config = replace(config, sms=sms)
        return await _run(config, modem, terminals, presses, rate, sms_terminals)
    raise AssertionError("unreachable")


async def _run(  # noqa: PLR0917
    config: Config,
    modem: SocketModemServer | None,
    terminals: int,
    presses: int,
    rate: float,
    sms_terminals: int,
) -> int:
    assert config.tcp is not None
    gateway = await build(config)
    chosen = list(gateway.registry.terminals.values())[:terminals]
    by_sms = chosen[len(chosen) - sms_terminals :] if modem is not None else []
    keys = {t.id: t.key for t in chosen if t not in by_sms}
    if not keys:
        print("demo: the registry has no terminals ([gateway] registry)", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    serving = asyncio.create_task(run(gateway, stop=stop))
    await gateway.started.wait()
    sms_fleet = None
    if modem is not None and by_sms:
        sms_fleet = SmsFleet({t.id: t.key for t in by_sms}, modem.deliver)
        sms_running = asyncio.create_task(sms_fleet.run(speed=3600.0))
    host, _ = parse_listen("tcp.listen", config.tcp.listen)
    assert gateway.tcp is not None
    options = FleetOptions(
        pattern=Steady(rate=rate),
        seed=int(time.time()),
        faults=DEMO_FAULTS,
        state_dir=config.data_dir / "firmware_sim",
        name="demo",
    )
    print(
        f"smiley-gateway demo: {len(keys)} simulated terminals -> tcp {config.tcp.listen},"
        f" {presses} presses at {rate}/s each; {len(by_sms)} SMS terminals -> a simulated"
        f" modem, an hour a second; store {config.store_url()}",
        flush=True,
    )
    started = time.monotonic()
    try:
        async with Fleet(keys, LinkOptions(host, gateway.tcp.port), options) as fleet:
            summary = asyncio.create_task(_print_summary(gateway, fleet, started))
            try:
                await fleet.run(presses=presses)
                await fleet.wait_all_acked(timeout=120)
                if sms_fleet is not None and modem is not None:
                    sms_running.cancel()
                    await asyncio.gather(sms_running, return_exceptions=True)
                    await _modem_emptied(modem)
                await gateway.forwarder.drain()
            finally:
                summary.cancel()
                await asyncio.gather(summary, return_exceptions=True)
        print(_line(gateway, fleet, started), flush=True)
        missing = await _missing_from_store(gateway, fleet)
        wrong_hours = await _wrong_hours(gateway, sms_fleet) if sms_fleet is not None else 0
    finally:
        stop.set()
        await serving
    acked = len(fleet.report.acked)
    if missing:
        print(f"demo: {missing} ACKed presses are missing from the store", file=sys.stderr)
        return 1
    print(f"demo: all {acked} ACKed presses are in the central store, each once.")
    if sms_fleet is not None:
        hours = len(sms_fleet.report.expected_counts())
        if wrong_hours:
            print(f"demo: {wrong_hours} of {hours} SMS hours differ in the store", file=sys.stderr)
            return 1
        print(
            f"demo: {len(sms_fleet.report.batches)} SMS batches, {hours} terminal-hours,"
            " in the central store with the counts of their latest batch."
        )
    return 0


async def _modem_emptied(modem: SocketModemServer) -> None:
    """Wait until the gateway took and deleted every message the modem got."""
    async with asyncio.timeout(60.0):
        while not modem.all_taken:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def _wrong_hours(gateway: Gateway, sms_fleet: SmsFleet) -> int:
    stored: dict[tuple[int, int], list[int]] = {}
    async for p in gateway.store.presses(None, None):
        if p.precision == "hour":
            stored.setdefault((p.terminal_id, p.occurred_at), [0, 0, 0, 0])[p.button - 1] = p.count
    expected = sms_fleet.report.expected_counts()
    return sum(tuple(stored.get(key, [0, 0, 0, 0])) != counts for key, counts in expected.items())


async def _print_summary(gateway: Gateway, fleet: Fleet, started: float) -> None:
    while True:
        await asyncio.sleep(1)
        print(_line(gateway, fleet, started), flush=True)


def _line(gateway: Gateway, fleet: Fleet, started: float) -> str:
    counters = gateway.ingest.counters
    committed = gateway.outbox.committed_presses
    elapsed = time.monotonic() - started
    tcp = gateway.tcp
    sms = gateway.sms.counters.batches if gateway.sms is not None else 0
    return (
        f"{elapsed:6.1f}s  connected={tcp.connections if tcp else 0:<4}"
        f" committed={committed:<7} rate={committed / max(elapsed, 1e-9):7.1f}/s"
        f" forwarded={gateway.forwarder.forwarded:<7}"
        f" quarantined={counters.rejected_records + counters.refused_frames:<4}"
        f" sim_acked={fleet.report.acked_count:<7} sms_batches={sms:<5}"
    )


async def _missing_from_store(gateway: Gateway, fleet: Fleet) -> int:
    stored = {(p.terminal_id, p.seq) async for p in gateway.store.presses(None, None)}
    return len(set(fleet.report.acked) - stored)
