"""MQTT 5 shared subscriptions (#21.1): gateways in one group share a fleet's messages."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from firmware_sim import Fleet, FleetOptions, MqttLinkOptions, Steady
from firmware_sim import load_registry as load_sim_registry
from firmware_sim.harness import PrivateMosquitto, export_rows
from gateway.errors import ConfigError
from gateway.registry.config import MqttSection, load_config, validate_config
from gateway.transports.mqtt_topics import up_subscription
from tests.conftest import GatewayHarness

REPO = Path(__file__).resolve().parents[1]
SAMPLE_REGISTRY = (REPO / "deploy" / "terminals.example.toml").read_text(encoding="utf-8")
SQLITE_URL_LINE = 'url = "sqlite:///var/central.db"'


def test_the_group_shares_the_up_topics_and_empty_means_no_group() -> None:
    assert up_subscription("") == "smiley/v1/+/up"
    assert up_subscription("smiley") == "$share/smiley/smiley/v1/+/up"
    assert MqttSection().shared_group == ""


@pytest.mark.parametrize("group", ["a/b", "a+", "#", "tab\there"])
def test_a_share_name_with_a_wildcard_or_separator_is_refused(tmp_path: Path, group: str) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[mqtt]\nshared_group = "{group}"\n'.replace("\t", "\\t"), "utf-8")
    with pytest.raises(ConfigError, match=r"mqtt\.shared_group"):
        validate_config(load_config(config, env={}))


def member(tmp_path: Path, name: str, broker: PrivateMosquitto, store: Path) -> GatewayHarness:
    """One gateway of the group ``smiley``: its own client id, outbox and session; one store."""
    directory = tmp_path / name
    directory.mkdir()
    harness = GatewayHarness(
        directory,
        registry=SAMPLE_REGISTRY,
        extra=f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nclient_id = "{name}"\n'
        'shared_group = "smiley"\nreconnect_max_s = 1\n',
    )
    text = harness.config_path.read_text(encoding="utf-8")
    assert SQLITE_URL_LINE in text
    harness.config_path.write_text(
        text.replace(SQLITE_URL_LINE, f'url = "sqlite:///{store}"'), encoding="utf-8"
    )
    return harness


async def test_two_gateways_in_one_group_share_the_load_and_store_each_press_once(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    store = tmp_path / "central.db"
    members = [member(tmp_path, name, broker, store) for name in ("gw-a", "gw-b")]
    for harness in members:
        gateway = await harness.start()
        assert gateway.mqtt is not None
        await asyncio.wait_for(gateway.mqtt.connected.wait(), 10)
    keys = load_sim_registry(tmp_path / "gw-a" / "terminals.toml")
    link = MqttLinkOptions("127.0.0.1", broker.port, window=4, max_records=20, answer_timeout=10)
    options = FleetOptions(pattern=Steady(rate=0), seed=21, name="shared")
    try:
        async with Fleet(keys, link, options) as fleet:
            await fleet.run(presses=5_000)
            await fleet.wait_all_acked(timeout=120)
        for harness in members:
            await harness.forwarded()
    finally:
        for harness in members:
            await harness.stop()
    taken = []
    for harness in members:
        assert harness.gateway is not None
        assert harness.gateway.mqtt is not None
        taken.append(harness.gateway.mqtt.messages)
    # Mosquitto hands a group's messages round-robin: each member takes a share,
    # and each message published reaches one member only (without the group, both).
    assert all(n > 0 for n in taken), f"messages per member: {taken}"
    terminals = fleet.report.terminals.values()
    assert sum(taken) == sum(sum(t.frames_sent.values()) for t in terminals)
    assert sum(t.duplicate_acks for t in terminals) == 0
    rows = export_rows(members[0].config_path)
    keys_stored = Counter((r["terminal_id"], r["seq"]) for r in rows)
    assert [k for k, n in keys_stored.items() if n > 1] == []
    assert set(keys_stored) == set(fleet.report.acked)
    assert fleet.report.acked_count == 5_000
    assert {r["transport"] for r in rows} == {"mqtt"}


async def test_a_member_away_gets_its_share_on_return_and_nothing_is_stored_twice(
    tmp_path: Path, broker: PrivateMosquitto
) -> None:
    """Mosquitto 2.0 keeps handing an away member (its session alive) its share of the group.

    Those messages wait in its session: their terminals get no answer from it and
    publish again, and a resend may reach the member still there; when the away
    member returns, the broker delivers what it kept, which is stored once.
    """
    store = tmp_path / "central.db"
    a, b = (member(tmp_path, name, broker, store) for name in ("gw-a", "gw-b"))
    for harness in (a, b):
        gateway = await harness.start()
        assert gateway.mqtt is not None
        await asyncio.wait_for(gateway.mqtt.connected.wait(), 10)
    await b.stop()  # its persistent session stays at the broker, subscribed to the group
    keys = load_sim_registry(tmp_path / "gw-a" / "terminals.toml")
    keys = {tid: keys[tid] for tid in sorted(keys)[:10]}
    link = MqttLinkOptions(
        "127.0.0.1", broker.port, window=1, max_records=5, answer_timeout=1, max_answer_timeout=1
    )
    options = FleetOptions(pattern=Steady(rate=0), seed=22, name="away")
    try:
        async with Fleet(keys, link, options) as fleet:
            await fleet.run(presses=60)
            await fleet.wait_all_acked(timeout=60)  # by a alone, through the resends
            assert a.gateway is not None
            assert a.gateway.mqtt is not None
            terminals = fleet.report.terminals.values()
            assert sum(t.republishes for t in terminals) > 0  # b's share went unanswered
            returned = await b.start()
            assert returned.mqtt is not None
            await asyncio.wait_for(returned.mqtt.connected.wait(), 10)
            deadline = asyncio.get_running_loop().time() + 10
            while returned.mqtt.messages == 0:  # what the broker kept for b, delivered now
                assert asyncio.get_running_loop().time() < deadline, "b got nothing back"
                await asyncio.sleep(0.05)
        for harness in (a, b):
            await harness.forwarded()
    finally:
        for harness in (a, b):
            await harness.stop()
    rows = export_rows(a.config_path)
    keys_stored = Counter((r["terminal_id"], r["seq"]) for r in rows)
    assert [k for k, n in keys_stored.items() if n > 1] == []
    assert set(keys_stored) == set(fleet.report.acked)
    assert len(keys_stored) == 60
