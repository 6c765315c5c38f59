"""The simulated GSM modem (firmware_sim.modem), its SMS PDU encoder and the SMS terminals.

Core tests run on a fake clock; server tests talk to the modem through a real
pseudo-terminal (serial.Serial) and through pyserial's socket:// URL, reading in a
worker thread so the event loop (which runs the modem) stays free.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import serial

from firmware_sim.modem import ModemCore
from firmware_sim.modem_profiles import PRESETS, ModemProfile
from firmware_sim.modem_server import PtyModemServer, SocketModemServer
from firmware_sim.sms_pdu import (
    GSM7,
    Concat,
    Deliver,
    Form,
    deliver_pdu,
    pack_septets,
    split_frame,
    tpdu_length,
)
from firmware_sim.sms_terminal import SmsFleet, SmsFleetOptions, SmsTerminalOptions
from protocols.frames import Hourly, decode, encode

KEY = bytes(range(16))
VECTORS = Path("/work/shared/reference/sms-pdu-vectors.json")
WHEN = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sms(sender: str = "+4915112345678", data: bytes = b"hello") -> str:
    return deliver_pdu(Deliver(sender=sender, timestamp=WHEN, data=data, dcs=0x04))


def core_of(
    profile: ModemProfile | str = "generic", **switches: Any
) -> tuple[ModemCore, FakeClock]:
    base = ModemProfile.preset(profile) if isinstance(profile, str) else profile
    clock = FakeClock()
    pin = switches.pop("pin", None)
    return ModemCore(dataclasses.replace(base, **switches), clock=clock, pin=pin), clock


def at(core: ModemCore, line: str) -> bytes:
    core.receive(line.encode() + b"\r")
    return core.take_output()


def quiet(core: ModemCore) -> None:
    """Echo off, numeric errors, everything the boot said dropped."""
    at(core, "ATE0")
    at(core, "AT+CMEE=1")
    core.take_output()


# ---------------------------------------------------------------- the core, byte for byte


def test_boot_and_init_sequence() -> None:
    core, _ = core_of()
    assert core.take_output() == b"\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n"
    assert at(core, "AT") == b"AT\r\r\nOK\r\n"  # echo on by default
    assert at(core, "ATE0") == b"ATE0\r\r\nOK\r\n"
    assert at(core, "AT") == b"\r\nOK\r\n"
    answers = {
        "AT+CMEE=1": b"\r\nOK\r\n",
        "AT+CPIN?": b"\r\n+CPIN: READY\r\n\r\nOK\r\n",
        "AT+CFUN?": b"\r\n+CFUN: 1\r\n\r\nOK\r\n",
        "AT+CGMI": b"\r\nGeneric\r\n\r\nOK\r\n",
        "AT+CGMM": b"\r\nGSM Modem\r\n\r\nOK\r\n",
        "AT+CMGF=0": b"\r\nOK\r\n",
        "AT+CMGF=1": b"\r\nOK\r\n",
        "AT+CMGF?": b"\r\n+CMGF: 1\r\n\r\nOK\r\n",
        "AT+CMGF=2": b"\r\nERROR\r\n",
        "AT+CPMS?": b'\r\n+CPMS: "SM",0,30,"SM",0,30,"SM",0,30\r\n\r\nOK\r\n',
        'AT+CPMS="ME","ME","ME"': b"\r\n+CPMS: 0,30,0,30,0,30\r\n\r\nOK\r\n",
        'AT+CPMS="XX"': b"\r\n+CMS ERROR: 302\r\n",
        "AT+CNMI=2,1,0,0,0": b"\r\nOK\r\n",
        "AT+CNMI?": b"\r\n+CNMI: 2,1,0,0,0\r\n\r\nOK\r\n",
        "AT+CSQ": b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n",
        "AT+CREG=2": b"\r\nOK\r\n",
        "AT+CREG?": b"\r\n+CREG: 2,1\r\n\r\nOK\r\n",
        "AT^CURC=0": b"\r\nERROR\r\n",
        "AT+NOPE": b"\r\nERROR\r\n",
        "ATZ": b"\r\nOK\r\n",
    }
    for command, answer in answers.items():
        assert at(core, command) == answer, command
    assert at(core, "AT") == b"AT\r\r\nOK\r\n"  # ATZ brought the echo back
    assert at(core, "ATE0;+CMGF=0;+CSQ") == b"ATE0;+CMGF=0;+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    assert at(core, "AT+CMEE=2;+CMGR=99") == b"\r\n+CMS ERROR: invalid memory index\r\n"
    assert at(core, "AT+CPIN=1234") == b"\r\n+CME ERROR: operation not allowed\r\n"


def test_byte_at_a_time_is_the_same_as_all_at_once() -> None:
    lines = b"ATE0\rAT+CSQ\r\nAT+CPMS?\rAT+CMGL=4\r"
    whole, _ = core_of()
    whole.receive(lines)
    single, _ = core_of()
    for byte in lines:
        single.receive(bytes([byte]))
    assert single.take_output() == whole.take_output()


def test_storage_cmti_cmgl_cmgr_cmgd() -> None:
    core, _ = core_of()
    quiet(core)
    first, second = sms(data=b"one"), sms(data=b"two")
    core.deliver(first)
    assert core.take_output() == b""  # CNMI mt=0 after boot: stored silently
    at(core, "AT+CNMI=2,1,0,0,0")
    core.deliver(second)
    assert core.take_output() == b'\r\n+CMTI: "SM",2\r\n'
    assert (
        at(core, "AT+CMGL=4")
        == (
            f"\r\n+CMGL: 1,0,,{tpdu_length(first)}\r\n{first}\r\n"
            f"+CMGL: 2,0,,{tpdu_length(second)}\r\n{second}\r\n\r\nOK\r\n"
        ).encode()
    )
    assert (
        at(core, "AT+CMGR=2")
        == f"\r\n+CMGR: 1,,{tpdu_length(second)}\r\n{second}\r\n\r\nOK\r\n".encode()
    )
    assert at(core, "AT+CMGD=1") == b"\r\nOK\r\n"
    assert at(core, "AT+CMGD=1") == b"\r\n+CMS ERROR: 321\r\n"
    assert at(core, "AT+CMGR=1") == b"\r\nOK\r\n"  # empty slot: OK alone
    assert at(core, "AT+CMGR=31") == b"\r\n+CMS ERROR: 321\r\n"  # outside the storage
    core.deliver(sms(data=b"three"))
    assert core.take_output() == b'\r\n+CMTI: "SM",1\r\n'  # the first free index
    assert sorted(core.storage()) == [1, 2]
    assert at(core, "AT+CMGL=0").count(b"+CMGL:") == 1  # only the unread one
    assert at(core, "AT+CMGD=0,4") == b"\r\nOK\r\n"
    assert core.storage() == {}
    c = core.counters
    assert (c.offered, c.delivered, c.deleted, c.empty_reads, c.empty_deletes) == (3, 3, 3, 1, 1)


def test_full_storage_holds_messages_back_and_delivers_after_deletes() -> None:
    core, clock = core_of(capacity=2, network_retry_s=30.0)
    quiet(core)
    at(core, "AT+CNMI=2,1")
    pdus = [sms(data=bytes([i])) for i in range(4)]
    for pdu in pdus:
        core.deliver(pdu)
    assert core.take_output() == b'\r\n+CMTI: "SM",1\r\n\r\n+CMTI: "SM",2\r\n'
    assert list(core.held) == pdus[2:]
    assert at(core, "AT+CPMS?") == b'\r\n+CPMS: "SM",2,2,"SM",2,2,"SM",2,2\r\n\r\nOK\r\n'
    core.receive(b"AT+CMGW=10\r")
    assert core.take_output() == b"\r\n+CMS ERROR: 322\r\n"
    assert at(core, "AT+CMGD=1") == b"\r\nOK\r\n"
    assert core.next_deadline() == clock.now + 30.0
    clock.now += 29
    core.tick()
    assert core.take_output() == b""  # the network has not tried again yet
    clock.now += 1
    core.tick()
    assert core.take_output() == b'\r\n+CMTI: "SM",1\r\n'
    at(core, "AT+CMGD=1")
    at(core, "AT+CMGD=2")
    clock.now += 30
    core.tick()
    assert core.take_output() == b'\r\n+CMTI: "SM",1\r\n'
    assert [m.pdu for m in core.storage().values()] == [pdus[3]]
    assert not core.held
    assert core.counters.delivered == 4
    assert core.counters.held_back >= 3


def test_reset_in_the_middle_of_cmgr() -> None:
    core, _ = core_of(reset_on_cmgr=2, reset_cut_at=10)
    quiet(core)
    at(core, "AT+CNMI=2,1")
    core.deliver(sms())
    core.take_output()
    assert at(core, "AT+CMGR=1").startswith(b"\r\n+CMGR: 0,,")
    core.storage()[1].stat = 0  # unread again, to see the cut read leaves it so
    answer = at(core, "AT+CMGR=1")
    assert answer == b"\r\n+CMGR: 0" + b"\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n"
    assert core.counters.resets == 1
    assert core.storage()[1].stat == 0  # kept, still unread
    assert at(core, "AT") == b"AT\r\r\nOK\r\n"  # echo on again
    assert at(core, "AT+CNMI?") == b"AT+CNMI?\r\r\n+CNMI: 0,0,0,0,0\r\n\r\nOK\r\n"
    assert at(core, "AT+CMGR=9") == b"AT+CMGR=9\r\r\nOK\r\n"  # CMEE forgotten; fires once
    assert b"+CMGR: 0" in at(core, "AT+CMGR=1")


def test_sim_busy_after_boot_then_ready_urcs() -> None:
    core, clock = core_of("simcom", sim_busy_s=5.0)
    assert core.take_output() == b"\r\nRDY\r\n\r\n+CFUN: 1\r\n"
    quiet(core)
    assert at(core, "AT+CMGL=4") == b"\r\n+CME ERROR: 14\r\n"
    assert at(core, "AT+CPIN?") == b"\r\n+CME ERROR: 14\r\n"
    assert at(core, "AT+CSQ") == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    core.deliver(sms())  # the network keeps it until the SIM is ready
    assert core.next_deadline() == clock.now + 5.0
    clock.now += 5
    core.tick()
    assert core.take_output() == (
        b"\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n\r\nSMS DONE\r\n\r\nPB DONE\r\n"
    )
    assert at(core, "AT+CMGL=4").startswith(b"\r\n+CMGL: 1,0,,")


def test_pin() -> None:
    core, _ = core_of(pin="1234")
    assert core.take_output() == b"\r\nRDY\r\n\r\n+CPIN: SIM PIN\r\n"
    quiet(core)
    assert at(core, "AT+CPIN?") == b"\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n"
    assert at(core, "AT+CMGL=4") == b"\r\n+CME ERROR: 11\r\n"
    assert at(core, 'AT+CPIN="0000"') == b"\r\n+CME ERROR: 16\r\n"
    assert at(core, 'AT+CPIN="1234"') == b"\r\nOK\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n"
    assert at(core, "AT+CMGL=4") == b"\r\nOK\r\n"
    core.reset()  # the SIM wants its PIN again
    assert b"+CPIN: SIM PIN" in core.take_output()


def test_hang_and_hang_on_command() -> None:
    core, clock = core_of(hang_on_command=4, hang_s=3.0)
    quiet(core)  # commands 1 and 2
    assert at(core, "AT") == b"\r\nOK\r\n"
    assert at(core, "AT+CSQ") == b""  # the 4th command: swallowed, hung
    assert at(core, "AT") == b""
    core.deliver(sms())
    assert core.next_deadline() == clock.now + 3.0
    clock.now += 3
    core.tick()
    assert at(core, "AT") == b"\r\nOK\r\n"
    core.hang(1.0)
    assert at(core, "AT") == b""
    clock.now += 1
    assert at(core, "AT") == b"\r\nOK\r\n"
    assert core.stored_now == 1  # messages still arrived


def test_prompt_escape_and_submit() -> None:
    core, _ = core_of()
    quiet(core)
    assert at(core, "AT+CMGS=20") == b"\r\n> "
    core.receive(b"0011000B91\x1b")
    assert core.take_output() == b"\r\nOK\r\n"
    assert at(core, "AT") == b"\r\nOK\r\n"
    submit = "0011000B919471123456F80000AA05E8329BFD06"
    assert at(core, f"AT+CMGS={len(submit) // 2 - 1}") == b"\r\n> "
    core.receive(submit.encode() + b"\x1a")
    assert core.take_output() == b"\r\n+CMGS: 1\r\n\r\nOK\r\n"
    assert core.counters.submitted == [submit]


# ---------------------------------------------------------------- every profile's quirk


def test_generic_has_no_quirks_to_see() -> None:
    core, _ = core_of()
    quiet(core)
    at(core, "AT+CNMI=2,2")
    for _ in range(3):
        core.deliver(sms())
    assert core.take_output().count(b"+CMT:") == 0


def test_huawei() -> None:
    core, clock = core_of("huawei")
    assert core.take_output() == b"\r\r\n^SYSSTART\r\r\n\r\r\n+CPIN: READY\r\r\n"
    quiet(core)
    assert at(core, "AT+FOO") == b"\r\r\nCOMMAND NOT SUPPORT\r\r\n"
    assert at(core, "AT+CSQ") == b"\r\r\n+CSQ: 20,99\r\r\n\r\r\nOK\r\r\n"
    assert at(core, 'AT+CPMS="MT"') == b"\r\r\n+CMS ERROR: 302\r\r\n"
    clock.now += 3
    core.tick()
    assert core.take_output() == b"\r\r\n^RSSI:20\r\r\n"
    assert at(core, "AT^CURC=0") == b"\r\r\nOK\r\r\n"
    clock.now += 30
    core.tick()
    assert core.take_output() == b""
    at(core, "AT+CNMI=2,1")
    core.deliver(sms())
    assert core.take_output() == b'\r\r\n+CMTI: "SM",0\r\r\n'  # indexes from 0
    assert at(core, "AT+CMGR=0").startswith(b"\r\r\n+CMGR: 0,,")


def test_rssi_inside_an_answer_with_any_profile() -> None:
    core, clock = core_of("huawei", urc_in_response=True, urc_hold_s=10.0)
    quiet(core)
    clock.now += 3
    core.tick()
    assert core.take_output() == b""
    assert at(core, "AT+CSQ") == b"\r\r\n+CSQ: 20,99\r\r\n\r\r\n^RSSI:20\r\r\n\r\r\nOK\r\r\n"


def test_cfun_reset_and_bad_deliveries() -> None:
    core, _ = core_of()
    quiet(core)
    assert at(core, "AT+CFUN=1,1") == b"\r\nOK\r\n\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n"
    assert core.counters.resets == 1
    with pytest.raises(ValueError, match="not an SMS PDU"):
        core.deliver("zz")
    with pytest.raises(ValueError, match="not an SMS PDU"):
        core.deliver("07")


def test_quectel_urcs_inside_answers() -> None:
    core, clock = core_of("quectel")
    assert core.take_output().endswith(b"\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n")
    quiet(core)
    assert at(core, "AT+CNMI?") == b"\r\n+CNMI: 2,1,0,0,0\r\n\r\nOK\r\n"  # the default
    core.deliver(sms())
    assert core.take_output() == b""
    assert at(core, "AT+CSQ") == b'\r\n+CSQ: 20,99\r\n\r\n+CMTI: "SM",1\r\n\r\nOK\r\n'
    core.deliver(sms())
    assert at(core, "AT") == b"\r\nOK\r\n"  # no info lines: the URC waits
    clock.now += 2
    core.tick()
    assert core.take_output() == b'\r\n+CMTI: "SM",2\r\n'


def test_simcom_routes_and_stores_every_second_message() -> None:
    core, _ = core_of("simcom")
    quiet(core)
    at(core, "AT+CNMI=2,2,0,0,0")
    first, second = sms(data=b"1"), sms(data=b"2")
    core.deliver(first)
    assert core.take_output() == b'\r\n+CMTI: "SM",1\r\n'
    core.deliver(second)
    assert core.take_output() == (
        f'\r\n+CMT: ,{tpdu_length(second)}\r\n{second}\r\n\r\n+CMTI: "SM",2\r\n'.encode()
    )
    assert core.counters.routed == 1
    assert core.stored_now == 2


def test_wavecom() -> None:
    core, _ = core_of("wavecom")
    assert core.take_output() == b"\r\n+WIND: 3\r\n\r\n+WIND: 1\r\n\r\n+WIND: 4\r\n"
    quiet(core)
    assert at(core, "AT+CPIN?") == b"\r\n+CPIN: READY\r\n"  # and no OK
    assert at(core, "AT+CNMI=2,1,0,0,0") == b"\r\n+CMS ERROR: 302\r\n"
    assert at(core, "AT+CNMI=1,1,0,0,0") == b"\r\nOK\r\n"
    assert at(core, "AT+CNMI=?") == b"\r\n+CNMI: (0,1,3),(0,1,2,3),(0,2),(0-2),(0,1)\r\n\r\nOK\r\n"


def test_ublox() -> None:
    core, _ = core_of("ublox")
    assert core.take_output() == b"\r\n+CPIN: READY\r\n"
    quiet(core)
    assert at(core, "AT+CMGR=1") == b"\r\n+CMS ERROR: 321\r\n"
    assert core.counters.empty_reads == 1
    assert at(core, "AT+CNMI=2,2") == b"\r\nERROR\r\n"
    assert at(core, "AT+CNMI=2,1") == b"\r\nOK\r\n"


def test_telit_creg_inside_answers() -> None:
    core, _ = core_of("telit")
    quiet(core)
    assert at(core, "AT+CSQ") == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    assert at(core, "AT+CSQ") == b"\r\n+CSQ: 20,99\r\n\r\n+CREG: 1\r\n\r\nOK\r\n"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_answers_the_init_sequence(name: str) -> None:
    core, clock = core_of(name)
    quiet(core)
    for command in ("AT+CMGF=0", 'AT+CPMS="SM","SM","SM"', "AT+CNMI=1,1,0,0,0", "AT+CMGL=4"):
        answer = at(core, command)
        assert answer.endswith(b"OK" + core.profile.eol.encode()), (command, answer)
    core.deliver(sms())
    clock.now += core.profile.urc_hold_s
    core.tick()
    assert b'+CMTI: "SM",' in core.take_output()
    assert (at(core, "AT^CURC=0") == b"\r\r\nOK\r\r\n") == (name == "huawei")


def test_profile_parse() -> None:
    profile = ModemProfile.parse("huawei,sim_busy_s=5,capacity=3,urc_in_response=true")
    assert (profile.name, profile.sim_busy_s, profile.capacity) == ("huawei", 5.0, 3)
    assert profile.urc_in_response
    assert profile.eol == "\r\r\n"
    assert ModemProfile.parse("wavecom,cnmi_modes=0/1").cnmi_modes == frozenset({0, 1})
    with pytest.raises(ValueError, match="unknown modem profile"):
        ModemProfile.parse("nokia")
    with pytest.raises(ValueError, match="SWITCH=VALUE"):
        ModemProfile.parse("generic,colour=red")


# ---------------------------------------------------------------- over a real pty and socket


def _read_until(port: serial.SerialBase, end: bytes) -> bytes:
    return bytes(port.read_until(end))


async def ask(port: serial.SerialBase, line: str, end: bytes = b"OK\r\n") -> bytes:
    port.write(line.encode() + b"\r")
    return await asyncio.to_thread(_read_until, port, end)


HW_OK = b"OK\r\r\n"


@pytest.fixture
async def pty_modem(tmp_path: Path) -> AsyncIterator[PtyModemServer]:
    async with PtyModemServer(
        ModemProfile.parse("huawei,network_retry_s=0.05,capacity=2"), link=tmp_path / "ttyMODEM"
    ) as modem:
        yield modem


async def test_pty_init_storage_and_cmti(pty_modem: PtyModemServer) -> None:
    port = serial.Serial(pty_modem.path, 115200, timeout=2)
    try:
        assert await asyncio.to_thread(os.path.realpath, pty_modem.path) == pty_modem.slave_path
        assert await ask(port, "ATE0", HW_OK) == b"ATE0\r\r\r\nOK\r\r\n"
        assert await ask(port, "AT+CMEE=1;^CURC=0", HW_OK) == b"\r\r\nOK\r\r\n"
        assert await ask(port, "AT+CSQ", HW_OK) == b"\r\r\n+CSQ: 20,99\r\r\n\r\r\nOK\r\r\n"
        await ask(port, "AT+CNMI=2,1,0,0,0", HW_OK)
        for data in (b"a", b"b", b"c"):
            pty_modem.deliver(sms(data=data))
        urcs = await asyncio.to_thread(_read_until, port, b'"SM",1\r\r\n')
        assert urcs == b'\r\r\n+CMTI: "SM",0\r\r\n\r\r\n+CMTI: "SM",1\r\r\n'
        assert pty_modem.core.held  # full: the third waits at the network
        listing = await ask(port, "AT+CMGL=4", HW_OK)
        assert listing.count(b"+CMGL:") == 2
        assert await ask(port, "AT+CMGD=0", HW_OK) == b"\r\r\nOK\r\r\n"
        urc = await asyncio.to_thread(_read_until, port, b'"SM",0\r\r\n')
        assert urc == b'\r\r\n+CMTI: "SM",0\r\r\n'  # delivered on the network's next try
        assert await ask(port, "AT+CMGD=1", HW_OK) == b"\r\r\nOK\r\r\n"
        assert await ask(port, "AT+CMGD=1", b"321\r\r\n") == b"\r\r\n+CMS ERROR: 321\r\r\n"
        assert pty_modem.counters.empty_deletes == 1
        assert pty_modem.stored_now == 1
    finally:
        port.close()


async def test_pty_disconnect_comes_back_on_the_link(pty_modem: PtyModemServer) -> None:
    port = serial.Serial(pty_modem.path, 115200, timeout=2)
    old = pty_modem.slave_path
    await pty_modem.disconnect(0.05)
    with pytest.raises(serial.SerialException):
        port.read(1)
    port.close()
    assert await asyncio.to_thread(os.path.realpath, pty_modem.path) == pty_modem.slave_path
    assert old  # the new slave may reuse the old number, the link points at it either way
    port = serial.Serial(pty_modem.path, 115200, timeout=2)
    try:
        port.reset_input_buffer()
        assert await ask(port, "AT", HW_OK) == b"AT\r\r\r\nOK\r\r\n"  # rebooted: echo is on
        assert pty_modem.counters.resets == 1
    finally:
        port.close()


WIRE_QUIRKS: dict[str, tuple[list[str], bytes]] = {
    "generic": (["AT+CMGR=3"], b"\r\nOK\r\n"),
    "quectel": (["AT+CSQ"], b'\r\n+CSQ: 20,99\r\n\r\n+CMTI: "SM",2\r\n\r\nOK\r\n'),
    "simcom": (["AT+CNMI=2,2"], b'\r\nOK\r\n\r\n+CMT: ,%d\r\n%s\r\n\r\n+CMTI: "SM",2\r\n'),
    "huawei": (["AT+FOO"], b"\r\r\nCOMMAND NOT SUPPORT\r\r\n"),
    "wavecom": (["AT+CPIN?", "AT+CNMI=2,1"], b"\r\n+CPIN: READY\r\n\r\n+CMS ERROR: 302\r\n"),
    "ublox": (["AT+CMGR=3"], b"\r\n+CMS ERROR: 321\r\n"),
    "telit": (["AT+CSQ"], b"\r\n+CSQ: 20,99\r\n\r\n+CREG: 1\r\n\r\nOK\r\n"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
async def test_every_profile_on_the_wire(name: str) -> None:
    """Through a real pty: the init sequence, then what sets the profile apart."""
    profile = PRESETS[name]
    eol = profile.eol.encode()
    async with PtyModemServer(profile) as modem:
        port = serial.Serial(modem.path, 115200, timeout=2)
        try:
            for command in ("ATE0", "AT+CMEE=1", "AT+CMGF=0", "AT+CNMI=1,1"):
                assert (await ask(port, command, b"OK" + eol)).endswith(b"OK" + eol)
            cgmi = await ask(port, "AT+CGMI", b"OK" + eol)
            assert cgmi == eol + profile.manufacturer.encode() + eol + eol + b"OK" + eol
            modem.deliver(sms())
            if not profile.urc_in_response:
                cmti = eol + f'+CMTI: "SM",{profile.first_index}'.encode() + eol
                assert await asyncio.to_thread(port.read, len(cmti)) == cmti
            else:
                assert b"+CMTI" in await ask(port, "AT+CSQ", b"OK" + eol)
                modem.deliver(sms())
            commands, expected = WIRE_QUIRKS[name]
            for command in commands:
                port.write(command.encode() + b"\r")
            if name == "simcom":  # every 2nd message with CNMI mt=2: routed and stored
                await asyncio.to_thread(port.read, 6)
                modem.deliver(sms())
                expected = expected[6:] % (tpdu_length(sms()), sms().encode())
            assert await asyncio.to_thread(port.read, len(expected)) == expected
        finally:
            port.close()


async def test_socket_url_reset_in_cmgr_and_disconnect() -> None:
    profile = ModemProfile.parse("generic,reset_on_cmgr=1,reset_cut_at=8")
    async with SocketModemServer(profile) as modem:
        port = serial.serial_for_url(modem.url, timeout=2)
        try:
            assert await ask(port, "ATE0") == b"ATE0\r\r\nOK\r\n"
            modem.deliver(sms())
            await ask(port, "AT+CMEE=1")
            assert await ask(port, "AT+CMGR=1", b"SMS DONE\r\n") == (
                b"\r\n+CMGR:\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n"
            )
            assert await ask(port, "AT") == b"AT\r\r\nOK\r\n"
            assert list(modem.storage()) == [1]
            modem.hang(0.3)
            port.write(b"AT\r")
            await asyncio.sleep(0.1)
            assert port.in_waiting == 0  # hung: the command is swallowed
            await asyncio.sleep(0.25)
            assert await ask(port, "AT") == b"AT\r\r\nOK\r\n"
        finally:
            await asyncio.to_thread(port.close)  # pyserial's socket close sleeps 0.3 s
        the_port = modem.port
        await modem.disconnect(0.05, reboot=False)
        assert modem.port == the_port
        port = serial.serial_for_url(modem.url, timeout=2)
        try:
            assert await ask(port, "AT+CSQ") == b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
        finally:
            await asyncio.to_thread(port.close)


# ---------------------------------------------------------------- the PDU encoder


VECTOR_IDS = [
    "gsmmodem-test2",
    "gsmmodem-escape-chars",
    "gsmmodem-megafon-ucs2-alnum-concat",
    "pmessaging-ucs2-chinese",
    "pmessaging-gmt-minus-three",
    "pmessaging-alnum-fonic-odd",
    "pmessaging-german-concat-1of2",
    "mm-pdu3-national",
    "mm-pdu3-8bit",
    "mm-dcs-f4-8bit",
    "mm-udhi-concat16",
    "gammu-at-sms-22-concat8",
]


@pytest.mark.parametrize("vector_id", VECTOR_IDS)
def test_encoder_against_known_pdus(vector_id: str) -> None:
    vectors = {v["id"]: v for v in json.loads(VECTORS.read_text())["vectors"]}
    v = vectors[vector_id]
    raw = bytes.fromhex(v["pdu"])
    first = raw[1 + raw[0]]  # the vectors do not list TP-MMS/SRI/RP: read them off
    concat = v["udh_concat"]
    message = Deliver(
        sender=v["sender"],
        timestamp=datetime.fromisoformat(v["timestamp"]),
        smsc=v["smsc"],
        text=v.get("text") or "",
        data=bytes.fromhex(v.get("data_hex") or ""),
        dcs=int(v["dcs"]["octet"], 16),
        pid=int(v["pid"], 16),
        sender_toa=int(v["sender_toa"], 16),
        concat=Concat(concat["ref"], concat["total"], concat["seq"], concat["ref_bits"])
        if concat
        else None,
        more_messages=not first & 0x04,
        status_report=bool(first & 0x20),
        reply_path=bool(first & 0x80),
    )
    assert deliver_pdu(message) == v["pdu"].upper()


def test_encoder_defaults_and_timezones() -> None:
    pdu = deliver_pdu(Deliver(sender="+4915112345678", timestamp=WHEN, smsc="", text="hi"))
    assert pdu.startswith("00040D91945111325476F8")  # no SMSC, MMS set, international
    east = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=45)))
    assert deliver_pdu(Deliver(sender="1", timestamp=east, smsc=""))[-4:] == "3200"
    west = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-3)))
    assert deliver_pdu(Deliver(sender="1", timestamp=west, smsc=""))[-4:] == "2900"
    assert pack_septets(b"\x41", fill_bits=1) == b"\x82"
    with pytest.raises(ValueError, match="timezone"):
        deliver_pdu(Deliver(sender="1", timestamp=datetime(2026, 1, 1), smsc=""))


# ---------------------------------------------------------------- the splitter


def parse(pdu_hex: str) -> dict[str, Any]:
    """Just enough of a decoder for what ``firmware_sim.sms_pdu`` writes."""
    data = bytes.fromhex(pdu_hex)
    i = 1 + data[0]
    first = data[i]
    digits, toa = data[i + 1], data[i + 2]
    i += 3 + (digits + 1) // 2
    dcs = data[i + 1]
    i += 9  # PID, DCS, SCTS
    udl, ud = data[i], data[i + 1 :]
    concat = None
    header = b""
    if first & 0x40:
        header = ud[: 1 + ud[0]]
        iei = header[1]
        concat = (header[3], header[4], header[5]) if iei == 0 else (
            header[3] << 8 | header[4], header[5], header[6])  # fmt: skip
    if dcs in (0x00,):
        value = int.from_bytes(ud, "little")
        skip = math.ceil(len(header) * 8 / 7)
        septets = bytes((value >> (7 * n)) & 0x7F for n in range(skip, udl))
        body: bytes | str = septets.decode(GSM7)
    elif dcs == 0x08:
        body = ud[len(header) :].decode("utf-16-be")
    else:
        body = ud[len(header) : udl]
    return {"toa": toa, "dcs": dcs, "udl": udl, "concat": concat, "body": body}


def frame_of(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


@pytest.mark.parametrize(
    ("size", "ref_bits", "parts"),
    [(140, 8, [140]), (141, 8, [134, 7]), (268, 8, [134, 134]), (269, 16, [133, 133, 3])],
)
def test_binary_split(size: int, ref_bits: int, parts: list[int]) -> None:
    frame = frame_of(size)
    pdus = split_frame(frame, sender="+491511", timestamp=WHEN, ref=300 % (1 << ref_bits),
                       ref_bits=ref_bits)  # fmt: skip
    decoded = [parse(p) for p in pdus]
    assert [len(d["body"]) for d in decoded] == parts
    assert b"".join(d["body"] for d in decoded) == frame
    if len(parts) > 1:
        ref = 300 % (1 << ref_bits)
        assert [d["concat"] for d in decoded] == [
            (ref, len(parts), n + 1) for n in range(len(parts))
        ]
    else:
        assert decoded[0]["concat"] is None
    assert all(d["udl"] <= 140 for d in decoded)


def test_binary_single_part_concat_and_class_dcs() -> None:
    (pdu,) = split_frame(frame_of(20), sender="+49", timestamp=WHEN, dcs=0xF5, concat_single=True)
    assert parse(pdu)["concat"] == (0, 1, 1)
    assert parse(pdu)["dcs"] == 0xF5
    with pytest.raises(ValueError, match="does not fit"):
        split_frame(frame_of(20), sender="+49", timestamp=WHEN, dcs=0x00)


@pytest.mark.parametrize(
    ("form", "ref_bits", "size", "chars"),
    [
        (Form.TEXT, 8, 116, [160]),
        (Form.TEXT, 8, 201, [153, 119]),
        (Form.TEXT, 16, 201, [152, 120]),
        (Form.TEXT_UCS2, 8, 201, [67, 67, 67, 67, 4]),
    ],
)
def test_text_split(form: Form, ref_bits: int, size: int, chars: list[int]) -> None:
    frame = frame_of(size)
    pdus = split_frame(frame, sender="+49", timestamp=WHEN, form=form, ref_bits=ref_bits)
    bodies = [parse(p)["body"] for p in pdus]
    assert [len(b) for b in bodies] == chars
    text = "".join(bodies)
    assert text.count("SM1 ") == 1
    assert text.startswith("SM1 ")
    assert base64.b64decode(text[4:]) == frame


# ---------------------------------------------------------------- SMS terminals


def reassemble(pdus: list[str]) -> list[bytes]:
    """Frames out of delivered PDUs, parts put together by (sender, ref, total)."""
    frames: list[bytes] = []
    groups: dict[tuple[Any, ...], dict[int, bytes | str]] = {}
    for pdu in pdus:
        d = parse(pdu)
        if d["concat"] is None:
            complete: list[bytes | str] = [d["body"]]
        else:
            ref, total, seq = d["concat"]
            group = groups.setdefault((ref, total), {})
            group[seq] = d["body"]
            if len(group) < total:
                continue
            complete = [group[n] for n in range(1, total + 1)]
            del groups[(ref, total)]
        if isinstance(complete[0], str):
            text = "".join(str(part) for part in complete)
            if text.startswith("SM1 "):
                frames.append(base64.b64decode(text[4:]))
        else:
            frames.append(b"".join(bytes(part) for part in complete))  # type: ignore[arg-type]
    return frames


def test_sms_fleet_report_is_what_the_pdus_say(tmp_path: Path) -> None:
    keys = {1000 + i: bytes([i]) * 16 for i in range(6)}
    delivered: list[str] = []
    options = SmsFleetOptions(start=1_767_225_600, seed=3, notices_per_day=4,
                              state_path=tmp_path / "sms.json")  # fmt: skip
    fleet = SmsFleet(keys, delivered.append, options)
    fleet.advance(hours=50)
    report = fleet.report
    assert any(len(b.pdus) > 1 for b in report.batches)  # 24-hour batches are concatenated
    assert report.duplicates > 0
    assert report.notices
    frames = [decode(raw, keys.get) for raw in reassemble(delivered)]
    hourly = [f for f in frames if isinstance(f, Hourly)]
    assert len(hourly) == sum(b.copies for b in report.batches)
    best: dict[tuple[int, int], tuple[int, tuple[int, int, int, int]]] = {}
    for f in hourly:
        for i, counts in enumerate(f.counts):
            key = (f.terminal_id, f.hour_start + 3600 * i)
            if key not in best or best[key][0] < f.batch_seq:
                best[key] = (f.batch_seq, counts)
    assert {k: v[1] for k, v in best.items()} == report.expected_counts()
    resent = [b for b in report.batches if b.frame.terminal_id == 1001]
    assert resent[1].frame.hour_start == resent[0].frame.hour_start + 3600 * (
        resent[0].frame.n_hours - 1
    )  # the partial hour again, with a higher batch_seq
    seqs = {tid: max(b.frame.batch_seq for b in report.batches if b.frame.terminal_id == tid)
            for tid in keys}  # fmt: skip
    again = SmsFleet(keys, delivered.append, options)  # a restart: batch_seq goes on
    again.advance(hours=25)
    for batch in again.report.batches:
        assert batch.frame.batch_seq > seqs[batch.frame.terminal_id]


def test_sms_terminal_options_and_fleet_into_the_modem() -> None:
    core, _ = core_of(capacity=500)
    at(core, "AT+CNMI=2,1")
    one = SmsTerminalOptions(form=Form.TEXT, hours_per_batch=24)
    fleet = SmsFleet({7: KEY}, core.deliver, SmsFleetOptions(
        start=1_767_225_600, options_of=lambda _tid: one, notices_per_day=0))  # fmt: skip
    fleet.advance(hours=25)
    (batch,) = fleet.report.batches
    assert batch.frame.n_hours == 24
    assert len(batch.pdus) == 2
    stored = [m.pdu for m in core.storage().values()]
    assert sorted(stored) == sorted(batch.pdus)
    assert reassemble(stored) == [encode(batch.frame, KEY)]


# ---------------------------------------------------------------- the CLI


def test_cli_modem_runs_a_fleet(tmp_path: Path) -> None:
    registry = tmp_path / "terminals.toml"
    registry.write_text('[[terminal]]\nid = 1001\nkey = "000102030405060708090a0b0c0d0e0f"\n')
    argv = ["modem", "--listen", "socket://127.0.0.1:0", "--profile", "quectel,capacity=99",
            "--terminals-from", str(registry), "--hours", "30", "--speed", "900000",
            "--report", str(tmp_path / "report.json")]  # fmt: skip
    # In a process of its own: the CLI configures structlog for the whole process.
    run = subprocess.run(
        [sys.executable, "-m", "firmware_sim", *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["sms"]["batches"] == 1  # terminal 1001 sends 24 hours at 00:40
    assert out["modem"]["offered"] >= out["sms"]["pdus_delivered"] > 0
    assert out["modem"]["delivered"] == out["modem"]["offered"]
    assert json.loads((tmp_path / "report.json").read_text()) == out


def test_cli_modem_bad_profile() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "modem", "--profile", "nokia",
         "--terminals-from", "x.toml"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert "unknown modem profile" in run.stderr
