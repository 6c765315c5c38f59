"""Issue #21's end-to-end run: three gateways behind one broker and one balancer, one store.

Three ``smiley-gateway run`` processes share a private PostgreSQL; a private
Mosquitto hands the MQTT terminals' messages to them through one shared
subscription group; a real HAProxy relays the TCP terminals to them with
PROXY protocol v2. A fleet of 300 terminals, half TCP and half MQTT, makes
100,000 presses; one instance is killed with SIGKILL in the middle and started
again. Then every press was ACKed and the store holds each exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from firmware_sim import Fleet, FleetOptions, LinkOptions, MqttLinkOptions, Steady
from firmware_sim import load_registry as load_sim_registry
from firmware_sim.harness import (
    GatewayProcess,
    PrivateCluster,
    PrivateHaproxy,
    PrivateMosquitto,
    free_port,
    write_config,
)
from tests.pg import started_cluster
from tests.test_postgres_outage import (
    acked_of,
    assert_exactly_the_acked,
    store_reaches,
    stored_rows,
    use_postgres,
)

PRESSES = 100_000
TCP_IDS = range(20_001, 20_151)
MQTT_IDS = range(30_001, 30_151)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    yield from started_cluster()


def registry_toml(ids: list[int]) -> str:
    """300 terminals of one store, keys from a fixed seed (no misuse interval: all counted)."""
    rng = random.Random(21)
    parts = [
        '[[company]]\nid = "chain"\nname = "Chain"\n',
        '[[location]]\nid = 1\ncompany = "chain"\nname = "Store"\ntimezone = "Europe/Helsinki"\n',
        '[[survey]]\nid = 1\ncompany = "chain"\nquestion = "How was it?"\n',
    ]
    parts += [
        f'[[terminal]]\nid = {i}\nkey = "{rng.randbytes(16).hex()}"\nlocation = 1\nsurvey = 1\n'
        for i in ids
    ]
    return "\n".join(parts)


def instance(directory: Path, n: int, broker: PrivateMosquitto, db_url: str) -> GatewayProcess:
    """Gateway ``n``: its own outbox, TCP port and MQTT client id; the group and store shared."""
    port = free_port()
    mqtt = (
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nclient_id = "gw{n}"\n'
        'shared_group = "smiley"\nreconnect_max_s = 1\n'
    )
    config = write_config(
        directory / f"gw{n}", port=port, registry=registry_toml([*TCP_IDS, *MQTT_IDS]), extra=mqtt
    )
    use_postgres(config, db_url, store="retry_max_s = 0.5\nforward_batch = 1000")
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[tcp]\n", "[tcp]\nproxy_protocol = true\n"), "utf-8")
    return GatewayProcess(config, port)


NOT_EXPECTED = ("proxy_header_refused", "store_seq_unavailable")


def log_problems(log: Path) -> list[str]:
    """Errors, refused PROXY headers (every connection came through HAProxy) and HELLOs
    whose store lookup failed (the store was up throughout): there must be none."""
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") in NOT_EXPECTED or entry.get("level") == "error":
                found.append(line)
    return found


async def test_three_instances_behind_broker_and_balancer_survive_a_kill_9(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute("CREATE DATABASE scaleout")
    finally:
        await admin.close()
    db_url = cluster.url("scaleout")
    broker = PrivateMosquitto(tmp_path / "broker", extra_config="allow_anonymous true")
    await broker.start()
    gateways = [instance(tmp_path, n, broker, db_url) for n in range(3)]
    try:
        for g in gateways:  # one at a time: the first migrates the store
            await g.start()
        keys = load_sim_registry(gateways[0].config.parent / "terminals.toml")
        async with contextlib.AsyncExitStack() as stack:
            lb = await stack.enter_async_context(
                PrivateHaproxy(tmp_path / "haproxy", [g.port for g in gateways])
            )
            tcp = LinkOptions("127.0.0.1", lb.port, window=4, max_records=50, answer_timeout=20.0)
            mqtt = MqttLinkOptions(
                "127.0.0.1", broker.port, window=4, max_records=50, answer_timeout=10.0
            )
            fleets = [
                await stack.enter_async_context(
                    Fleet(
                        {i: keys[i] for i in ids},
                        link,
                        FleetOptions(pattern=Steady(rate=0), seed=seed, name=name),
                    )
                )
                for ids, link, seed, name in (
                    (TCP_IDS, tcp, 1, "tcp"), (MQTT_IDS, mqtt, 2, "mqtt"),
                )
            ]  # fmt: skip
            runs = [asyncio.create_task(f.run(presses=PRESSES // 2)) for f in fleets]
            for fleet in fleets:
                await fleet.wait_acked(PRESSES // 8, timeout=120)
            victim = gateways[1]
            await victim.kill()  # mid-run: its outbox, MQTT session and TCP terminals
            acked_before_kill = acked_of(*fleets)
            assert not any(run.done() for run in runs), "the kill came after the presses"
            made_at_kill = sum(f.report.made_count for f in fleets)
            await victim.start()
            await asyncio.gather(*runs)
            for fleet in fleets:
                await fleet.wait_all_acked(timeout=150)
        await store_reaches(db_url, PRESSES, timeout=90)
    finally:
        codes = [await g.terminate() for g in gateways if g.alive]
        await broker.stop()
    assert codes == [0, 0, 0]
    for fleet in fleets:
        assert fleet.report.made_count == PRESSES // 2
        assert fleet.report.acked_count == PRESSES // 2
        assert fleet.report.outstanding() == {}
    tcp_terminals = fleets[0].report.terminals.values()
    # The kill cut the TCP terminals HAProxy had sent to the victim: they came back
    # through HAProxy (to another instance, or to the victim once it was up again).
    reconnected = [t for t in tcp_terminals if t.reconnects]
    assert reconnected, "no TCP terminal was connected to the killed instance"
    # WELCOME's next_seq, taken from the store as well, never claimed seqs not made yet.
    assert sum(t.gateway_ahead for t in tcp_terminals) == 0
    print(  # the run's figures, for the report (pytest -s)
        f"made at kill {made_at_kill}, acked before {len(acked_before_kill)};"
        f" tcp terminals reconnected {len(reconnected)};"
        f" mqtt republishes {sum(t.republishes for t in fleets[1].report.terminals.values())}"
    )
    rows = await stored_rows(db_url)
    assert len(rows) == PRESSES
    assert set(acked_before_kill) <= {(r["terminal_id"], r["seq"]) for r in rows}
    assert_exactly_the_acked(rows, acked_of(*fleets))
    for g in gateways:
        assert log_problems(g.log) == [], g.log
