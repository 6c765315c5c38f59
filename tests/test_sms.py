"""Hourly counts by SMS, end to end: simulated modem, real serial stack, gateway, store.

The modem is firmware_sim's, reached through pyserial (``socket://`` and a
pseudo-terminal pair); the gateway is the real one, in process or as a process
killed with -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.harness import GatewayProcess, export_rows, free_port
from firmware_sim.modem_profiles import ModemProfile
from firmware_sim.modem_server import ModemServer, PtyModemServer, SocketModemServer
from firmware_sim.sms_pdu import DCS_8BIT, Deliver, Form, deliver_pdu, split_frame
from firmware_sim.sms_terminal import SmsFleet, SmsFleetOptions, SmsReport
from protocols.frames import Ack, Hourly, Presses, PressRecord, decode, encode
from tests.conftest import GatewayHarness
from tests.support import KEYS, VECTOR_HEX, write_config
from tests.test_tcp import hello

pytestmark = pytest.mark.timeout(120)

HOURLY = VECTOR_HEX["hourly"]  # terminal 1002, batch 41, 2026-01-01 08:00Z, 3 hours
SENT = datetime(2026, 1, 1, 11, 5, tzinfo=UTC)
SENDER = "+4915100001002"


def sms_config(port: str, **overrides: object) -> str:
    settings: dict[str, object] = {
        "port": port,
        "command_timeout_s": 2.0,
        "poll_interval_s": 1.0,
        "keepalive_s": 0.5,
        "reopen_max_s": 0.5,
    }
    settings.update(overrides)
    lines = [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in settings.items()]
    return "[sms]\n" + "\n".join(lines).replace("'", '"') + "\n"


def pdus(
    frame: bytes, *, form: Form = Form.BINARY, ref: int = 7, timestamp: datetime = SENT, **kw: Any
) -> list[str]:
    return split_frame(frame, sender=SENDER, timestamp=timestamp, form=form, ref=ref, **kw)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110  (state of another task or process)
            await asyncio.sleep(0.05)


def hour_rows(rows: list[dict[str, Any]]) -> dict[tuple[int, str, int], int]:
    return {
        (r["terminal_id"], r["occurred_at"], r["button"]): r["count"]
        for r in rows
        if r["precision"] == "hour"
    }


async def exported(harness: GatewayHarness, *extra: str) -> list[dict[str, Any]]:
    await harness.forwarded()
    return await asyncio.to_thread(export_rows, harness.config_path, *extra)


def port_of(modem: ModemServer) -> str:
    """The started modem's port as [sms] port takes it."""
    return modem.path if isinstance(modem, PtyModemServer) else modem.url  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def sms_gateway(
    make_harness: Callable[..., GatewayHarness], modem: ModemServer, **overrides: object
) -> AsyncIterator[GatewayHarness]:
    async with modem:
        harness = make_harness(sms_config(port_of(modem), **overrides))
        await harness.start()
        try:
            yield harness
        finally:
            await harness.stop()


def modem_ready(harness: GatewayHarness) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        assert harness.gateway is not None
        assert harness.gateway.modem is not None
        return harness.gateway.modem.status.ready

    return check


def emptied(modem: ModemServer) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return modem.stored_now == 0 and modem.counters.delivered > 0

    return check


# --- the spec's HOURLY vectors, both forms ---------------------------------------------


@pytest.mark.parametrize("form", [Form.BINARY, Form.TEXT])
async def test_hourly_vector_in_both_forms_is_stored_with_hour_precision(
    make_harness: Callable[..., GatewayHarness], form: Form
) -> None:
    modem = SocketModemServer(ModemProfile.preset("generic"))
    async with modem:
        harness = make_harness(sms_config(modem.url))
        await harness.start()
        try:
            for pdu in pdus(HOURLY, form=form):
                modem.deliver(pdu)
            await eventually(emptied(modem))
            rows = await exported(harness)
        finally:
            await harness.stop()
    counts = hour_rows(rows)
    assert counts == {
        (1002, "2026-01-01T08:00:00Z", 1): 1,
        (1002, "2026-01-01T08:00:00Z", 3): 5,
        (1002, "2026-01-01T08:00:00Z", 4): 12,
        (1002, "2026-01-01T09:00:00Z", 2): 2,
        (1002, "2026-01-01T09:00:00Z", 3): 3,
        (1002, "2026-01-01T09:00:00Z", 4): 9,
        (1002, "2026-01-01T10:00:00Z", 4): 1,
    }  # fmt: skip  (the vector's counts; zero counts are not exported)
    assert {(r["transport"], r["seq"], r["local_time"][-6:]) for r in rows} == {
        ("sms", 41, "+02:00")
    }


async def test_a_24_hour_batch_in_two_parts_arriving_in_reverse_order(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    frame = VECTOR_HEX["hourly_24h"]
    parts = pdus(frame, ref=300, ref_bits=16, timestamp=datetime(2026, 1, 3, 1, tzinfo=UTC))
    assert len(parts) == 2
    modem = SocketModemServer(ModemProfile.preset("quectel"))
    async with sms_gateway(make_harness, modem) as harness:
        modem.deliver(parts[1])
        await eventually(emptied(modem))  # the second part alone: kept in the outbox
        assert hour_rows(await exported(harness)) == {}
        modem.deliver(parts[0])
        await eventually(lambda: _delivered(modem, 2))
        await eventually(emptied(modem))
        rows = await exported(harness)
    counts = hour_rows(rows)
    assert len({hour for _, hour, _ in counts}) <= 24
    assert sum(counts.values()) == sum(sum(c) for c in _hourly(frame).counts)


async def _delivered(modem: ModemServer, n: int) -> bool:
    return modem.counters.delivered >= n


def _hourly(frame: bytes) -> Hourly:
    decoded = decode(frame, KEYS.get)
    assert isinstance(decoded, Hourly)
    return decoded


# --- the rules of batches -------------------------------------------------------------


async def test_later_batches_replace_repeats_change_nothing_conflicts_are_quarantined(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    key = KEYS[1002]
    hour = 1767254400

    def batch(seq: int, counts: list[tuple[int, int, int, int]]) -> bytes:
        return encode(Hourly(1002, seq, hour, tuple(counts)), key)

    modem = SocketModemServer(ModemProfile.preset("simcom"))
    async with sms_gateway(make_harness, modem) as harness:
        for n, frame in enumerate(
            [
                batch(50, [(1, 1, 1, 1)]),
                batch(51, [(2, 0, 0, 0), (0, 0, 0, 7)]),  # replaces hour 0, adds hour 1
                batch(50, [(1, 1, 1, 1)]),  # the same batch again, as a new SMS
                batch(51, [(9, 9, 9, 9)]),  # a different batch with a used batch_seq
            ]
        ):
            for pdu in pdus(frame, ref=n):
                modem.deliver(pdu)
            await eventually(lambda n=n: _delivered(modem, n + 1))  # type: ignore[misc]
            await eventually(emptied(modem))
        text = "Ihr Guthaben betraegt 5,00 EUR"
        modem.deliver(deliver_pdu(Deliver(sender="Vodafone", timestamp=SENT, text=text)))
        await eventually(lambda: _delivered(modem, 5))
        await eventually(emptied(modem))
        rows = await exported(harness)
        rejected = await exported(harness, "--rejected")
    assert hour_rows(rows) == {
        (1002, "2026-01-01T08:00:00Z", 1): 2,
        (1002, "2026-01-01T09:00:00Z", 4): 7,
    }
    reasons = Counter(r["reason"] for r in rejected)
    assert reasons == {"BATCH_SEQ_CONFLICT": 1, "SMS_NOT_A_FRAME": 1}
    notice = next(r for r in rejected if r["reason"] == "SMS_NOT_A_FRAME")
    assert notice["peer"] == "Vodafone"
    assert text in notice["detail"]
    assert "2026-01-01T11:05:00" in notice["detail"]


async def test_bad_frames_by_sms_are_quarantined_and_deleted(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    good = HOURLY
    bad_crc = good[:-1] + bytes([good[-1] ^ 1])
    early = SENT.replace(hour=9)  # hour 10:00 of the batch starts after this time stamp
    modem = SocketModemServer(ModemProfile.preset("generic"))
    async with sms_gateway(make_harness, modem) as harness:
        for pdu in pdus(bad_crc) + pdus(good + b"\x00") + pdus(good, timestamp=early, ref=9):
            modem.deliver(pdu)
        modem.deliver(
            deliver_pdu(Deliver(sender=SENDER, timestamp=SENT, data=b"\x00\x01", dcs=DCS_8BIT))
        )
        await eventually(lambda: _delivered(modem, 4))
        await eventually(emptied(modem))
        rows = await exported(harness)
        rejected = await exported(harness, "--rejected")
    assert hour_rows(rows) == {}
    assert sorted(r["reason"] for r in rejected) == [
        "BAD_CRC", "MALFORMED", "MALFORMED", "SMS_NOT_A_FRAME",
    ]  # fmt: skip
    assert all(r["transport"] == "sms" and r["raw_hex"] for r in rejected)


async def test_incomplete_messages_go_to_quarantine_after_the_timeout(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    parts = pdus(VECTOR_HEX["hourly_24h"], ref=5)
    modem = SocketModemServer(ModemProfile.preset("generic"))
    async with sms_gateway(make_harness, modem) as harness:
        modem.deliver(parts[0])
        await eventually(emptied(modem))
        gateway = harness.gateway
        assert gateway is not None
        assert gateway.sms is not None
        assert await gateway.sms.expire() == 0  # not yet
        harness.now = 10**10  # far past the 24 h timeout
        assert await gateway.sms.expire() == 1
        rejected = await exported(harness, "--rejected")
    assert [r["reason"] for r in rejected] == ["SMS_INCOMPLETE"]
    assert "parts 1 of 2" in rejected[0]["detail"]


# --- modems and their quirks ----------------------------------------------------------

PROFILES = [
    "generic",
    "quectel",
    "simcom",
    "huawei",
    "wavecom",
    "ublox",
    "telit",
    "generic,urc_in_response=true,creg_in_response_every=2",
    "generic,sim_busy_s=2",
    "quectel,cmt_copy_every=2",
    "generic,capacity=3",
    "generic,cmgr_empty=+CMS ERROR: 321",
    "generic,hang_on_command=25,hang_s=4",
]


def fleet_for(modem: ModemServer, *, seed: int) -> SmsFleet:
    keys = {t: KEYS[t] for t in (1001, 1002)}
    return SmsFleet(keys, modem.deliver, SmsFleetOptions(seed=seed, notices_per_day=2.0))


async def run_fleet(
    harness: GatewayHarness, modem: ModemServer, fleet: SmsFleet, hours: int
) -> tuple[SmsReport, list[dict[str, Any]]]:
    for _ in range(hours):
        fleet.advance(hours=1)
        await asyncio.sleep(0.05)
    await eventually(lambda: _all_taken(modem, fleet), timeout=60)
    return fleet.report, await exported(harness)


async def _all_taken(modem: ModemServer, fleet: SmsFleet) -> bool:
    return modem.all_taken and modem.counters.offered > 0


def expected_rows(report: SmsReport) -> dict[tuple[int, str, int], int]:
    out = {}
    for (terminal_id, hour), counts in report.expected_counts().items():
        for button, n in enumerate(counts, start=1):
            if n:
                stamp = datetime.fromtimestamp(hour, UTC).isoformat().replace("+00:00", "Z")
                out[(terminal_id, stamp, button)] = n
    return out


@pytest.mark.parametrize("profile", PROFILES)
async def test_every_batch_once_through_each_modem_profile(
    make_harness: Callable[..., GatewayHarness], profile: str
) -> None:
    # The network retries a message the full storage refused this often (real: ~30 s).
    modem = PtyModemServer(ModemProfile.parse(f"{profile},network_retry_s=0.3"))
    async with sms_gateway(make_harness, modem) as harness:
        await eventually(modem_ready(harness))
        report, rows = await run_fleet(harness, modem, fleet_for(modem, seed=3), hours=30)
    assert len(report.batches) > 10
    assert hour_rows(rows) == expected_rows(report)
    assert modem.stored_now == 0


async def test_a_sim_that_asks_for_its_pin(make_harness: Callable[..., GatewayHarness]) -> None:
    modem = SocketModemServer(ModemProfile.preset("simcom"), pin="4711")
    async with sms_gateway(make_harness, modem, pin="4711") as harness:
        await eventually(modem_ready(harness))
        for pdu in pdus(HOURLY):
            modem.deliver(pdu)
        await eventually(emptied(modem))
        assert len(hour_rows(await exported(harness))) == 7


async def test_over_socket_url_with_huawei_endings_and_rssi_floods(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    modem = SocketModemServer(ModemProfile.parse("huawei,rssi_every_s=0.2,network_retry_s=0.3"))
    async with sms_gateway(make_harness, modem) as harness:
        await eventually(modem_ready(harness))
        report, rows = await run_fleet(harness, modem, fleet_for(modem, seed=4), hours=20)
    assert hour_rows(rows) == expected_rows(report)


async def test_reset_mid_read_and_port_loss_do_not_stall_tcp(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    modem = SocketModemServer(ModemProfile.parse("generic,reset_on_cmgr=3,network_retry_s=0.3"))
    async with sms_gateway(make_harness, modem) as harness:
        await eventually(modem_ready(harness))
        fleet = fleet_for(modem, seed=5)
        terminal, _ = await hello(harness)
        fleet.advance(hours=6)
        outage = asyncio.create_task(modem.disconnect(down_s=1.5))
        acked = 0
        for seq in range(40):  # TCP keeps answering while the modem is away
            at = 1767225600 + seq
            await terminal.send_frame(Presses(1001, at, seq, 0, (PressRecord(seq, at, 1, 0),)))
            acked += isinstance(await terminal.receive(), Ack)
            await asyncio.sleep(0.05)
        await outage
        fleet.advance(hours=6)
        report, rows = await run_fleet(harness, modem, fleet, hours=1)
        await terminal.close()
        assert harness.gateway is not None
        assert harness.gateway.modem is not None
        status = harness.gateway.modem.status
    assert acked == 40
    assert hour_rows(rows) == expected_rows(report)
    assert status.reopens >= 1
    assert status.resets_seen + status.reopens >= 2


# --- crashes between read, commit and delete ------------------------------------------


class InterceptingModem(SocketModemServer):
    """Calls ``on_command`` with each command line before the modem sees it; a True
    return swallows the command (the modem never answers it)."""

    on_command: Callable[[str], bool] = staticmethod(lambda line: False)

    def received(self, data: bytes) -> None:
        for line in data.split(b"\r"):
            text = line.decode("latin-1").strip()
            if text and self.on_command(text):
                return
        super().received(data)


@pytest.mark.parametrize("moment", ["after_commit_before_delete", "after_read_before_commit"])
async def test_kill_9_between_read_commit_and_delete(tmp_path: Path, moment: str) -> None:
    modem = InterceptingModem(ModemProfile.preset("generic"))
    async with modem:
        port = free_port()
        config = write_config(tmp_path, port=port, extra=sms_config(modem.url))
        gateway = GatewayProcess(config, port)
        crossed = asyncio.Event()

        def on_command(line: str) -> bool:
            if moment == "after_commit_before_delete" and line.startswith("AT+CMGD"):
                crossed.set()  # the gateway deletes only after its commit
                return True
            reading = line.startswith(("AT+CMGR", "AT+CMGL"))
            first = not crossed.is_set()
            if moment == "after_read_before_commit" and reading and modem.stored_now and first:
                assert gateway.process is not None
                gateway.process.send_signal(signal.SIGSTOP)  # frozen before it reads
                crossed.set()
            return False

        modem.on_command = on_command
        await gateway.start()
        for pdu in pdus(HOURLY):
            modem.deliver(pdu)
        await asyncio.wait_for(crossed.wait(), 30)
        await asyncio.sleep(0.2)  # the modem's answer (message now read) is on its way
        await gateway.kill()
        modem.on_command = lambda line: False
        await gateway.start()
        await eventually(emptied(modem))
        await gateway.terminate()
    rows = export_rows(config)
    assert hour_rows(rows) == {
        (1002, "2026-01-01T08:00:00Z", 1): 1, (1002, "2026-01-01T08:00:00Z", 3): 5,
        (1002, "2026-01-01T08:00:00Z", 4): 12, (1002, "2026-01-01T09:00:00Z", 2): 2,
        (1002, "2026-01-01T09:00:00Z", 3): 3, (1002, "2026-01-01T09:00:00Z", 4): 9,
        (1002, "2026-01-01T10:00:00Z", 4): 1,
    }  # fmt: skip
    assert export_rows(config, "--rejected") == []


async def test_an_sms_batch_reaches_the_fleet_status_with_the_sender_masked(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    modem = SocketModemServer(ModemProfile.preset("generic"))
    async with sms_gateway(make_harness, modem) as harness:
        for pdu in pdus(HOURLY):
            modem.deliver(pdu)
        await eventually(emptied(modem))
        assert harness.gateway is not None
        status = harness.gateway.ingest.fleet.terminals[1002]
        counters = harness.gateway.ingest.counters
    assert status.transport == "sms"
    assert status.presses == 1 + 5 + 12 + 2 + 3 + 9 + 1  # the vector's counts
    assert status.last_contact is not None
    assert SENDER not in (status.peer or "")  # a phone number is never shown in full
    assert status.peer == SENDER[:4] + "*" * (len(SENDER) - 6) + SENDER[-2:]
    assert counters.quarantined == {}  # a good batch is nobody's refusal
