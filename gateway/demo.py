"""``smiley-gateway demo``: the gateway on its configuration with a simulated fleet.

The fleet's seq numbers persist in the data directory, so a second demo run
continues where the first stopped instead of resending old seqs.
"""

from __future__ import annotations

import asyncio
import sys
import time

from firmware_sim import Fleet, FleetOptions, LinkOptions, Steady
from firmware_sim.faults import FaultOptions
from gateway.app import Gateway, build, run
from gateway.config import Config, parse_listen

DEMO_FAULTS = FaultOptions(split_write=0.05, corrupt_crc=0.005, drop=0.001)


async def run_demo(config: Config, *, terminals: int, presses: int, rate: float) -> int:
    if config.tcp is None:
        print("demo: the configuration has no [tcp] section", file=sys.stderr)
        return 2
    gateway = await build(config)
    keys = {t.id: t.key for t in list(gateway.registry.terminals.values())[:terminals]}
    if not keys:
        print("demo: the registry has no terminals ([gateway] registry)", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    serving = asyncio.create_task(run(gateway, stop=stop))
    await gateway.started.wait()
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
        f" {presses} presses at {rate}/s each; store {config.store_url()}",
        flush=True,
    )
    started = time.monotonic()
    try:
        async with Fleet(keys, LinkOptions(host, gateway.tcp.port), options) as fleet:
            summary = asyncio.create_task(_print_summary(gateway, fleet, started))
            try:
                await fleet.run(presses=presses)
                await fleet.wait_all_acked(timeout=120)
                await gateway.forwarder.drain()
            finally:
                summary.cancel()
                await asyncio.gather(summary, return_exceptions=True)
        print(_line(gateway, fleet, started), flush=True)
        missing = await _missing_from_store(gateway, fleet)
    finally:
        stop.set()
        await serving
    acked = len(fleet.report.acked)
    if missing:
        print(f"demo: {missing} ACKed presses are missing from the store", file=sys.stderr)
        return 1
    print(f"demo: all {acked} ACKed presses are in the central store, each once.")
    return 0


async def _print_summary(gateway: Gateway, fleet: Fleet, started: float) -> None:
    while True:
        await asyncio.sleep(1)
        print(_line(gateway, fleet, started), flush=True)


def _line(gateway: Gateway, fleet: Fleet, started: float) -> str:
    counters = gateway.ingest.counters
    committed = gateway.outbox.committed_presses
    elapsed = time.monotonic() - started
    tcp = gateway.tcp
    return (
        f"{elapsed:6.1f}s  connected={tcp.connections if tcp else 0:<4}"
        f" committed={committed:<7} rate={committed / max(elapsed, 1e-9):7.1f}/s"
        f" forwarded={gateway.forwarder.forwarded:<7}"
        f" quarantined={counters.rejected_records + counters.refused_frames:<4}"
        f" sim_acked={fleet.report.acked_count:<7}"
    )


async def _missing_from_store(gateway: Gateway, fleet: Fleet) -> int:
    stored = {(p.terminal_id, p.seq) async for p in gateway.store.presses(None, None)}
    return len(set(fleet.report.acked) - stored)
