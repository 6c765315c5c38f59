"""Simulated smiley terminals that talk terminal-protocol-v1 to a real gateway (TCP or MQTT).

Used by CI, benchmarks and demos. The entry points::

    from firmware_sim import Fleet, FleetOptions, LinkOptions, load_registry

    async with Fleet(load_registry("terminals.toml"), LinkOptions(host, port)) as fleet:
        await fleet.run(presses=1000)
        await fleet.wait_all_acked(timeout=30)
        assert store_rows == fleet.report.acked.keys()

with ``MqttLinkOptions(broker_host, broker_port)`` in place of ``LinkOptions`` for
terminals that are MQTT clients, and ``python -m firmware_sim tcp --help`` (or
``mqtt --help``). The library never configures structlog.

SMS terminals and the GSM modem they reach (``python -m firmware_sim modem --help``)::

    from firmware_sim import ModemProfile, SmsFleet, SocketModemServer

    async with SocketModemServer(ModemProfile.preset("huawei")) as modem:  # modem.url
        fleet = SmsFleet(keys, modem.deliver)
        fleet.advance(hours=30)
        assert store_counts == fleet.report.expected_counts()
"""

from firmware_sim.backoff import BackoffOptions
from firmware_sim.errors import (
    AnswerTimeout,
    ConnectFailed,
    ConnectionLost,
    GatewayProtocolError,
    NotAllAcked,
    Refused,
    RegistryError,
    SessionEnded,
    SimulatorError,
    StateError,
    TerminalStopped,
)
from firmware_sim.faults import Fault, FaultOptions, ScheduledFault
from firmware_sim.fleet import Fleet, FleetOptions
from firmware_sim.modem import ModemCore, ModemCounters, StoredMessage
from firmware_sim.modem_profiles import PRESETS as MODEM_PRESETS
from firmware_sim.modem_profiles import ModemProfile
from firmware_sim.modem_server import ModemServer, PtyModemServer, SocketModemServer
from firmware_sim.mqtt import MqttLinkOptions, PasswordSource
from firmware_sim.mqtt_client import MqttProtocol
from firmware_sim.patterns import Child, LunchQueue, Pattern, PressBudget, Steady
from firmware_sim.registry import load_registry, parse_registry
from firmware_sim.report import FleetReport, TerminalReport
from firmware_sim.sms_pdu import Concat, Deliver, Form, deliver_pdu, split_frame, text_pdus
from firmware_sim.sms_terminal import (
    SentBatch,
    SmsFleet,
    SmsFleetOptions,
    SmsReport,
    SmsTerminal,
    SmsTerminalOptions,
)
from firmware_sim.tcp import LinkOptions
from firmware_sim.terminal import POWER_ON_TIME, MadePress, Terminal, TerminalClock

__all__ = [
    "MODEM_PRESETS",
    "POWER_ON_TIME",
    "AnswerTimeout",
    "BackoffOptions",
    "Child",
    "Concat",
    "ConnectFailed",
    "ConnectionLost",
    "Deliver",
    "Fault",
    "FaultOptions",
    "Fleet",
    "FleetOptions",
    "FleetReport",
    "Form",
    "GatewayProtocolError",
    "LinkOptions",
    "LunchQueue",
    "MadePress",
    "ModemCore",
    "ModemCounters",
    "ModemProfile",
    "ModemServer",
    "MqttLinkOptions",
    "MqttProtocol",
    "NotAllAcked",
    "PasswordSource",
    "Pattern",
    "PressBudget",
    "PtyModemServer",
    "Refused",
    "RegistryError",
    "ScheduledFault",
    "SentBatch",
    "SessionEnded",
    "SimulatorError",
    "SmsFleet",
    "SmsFleetOptions",
    "SmsReport",
    "SmsTerminal",
    "SmsTerminalOptions",
    "SocketModemServer",
    "StateError",
    "Steady",
    "StoredMessage",
    "Terminal",
    "TerminalClock",
    "TerminalReport",
    "TerminalStopped",
    "deliver_pdu",
    "load_registry",
    "parse_registry",
    "split_frame",
    "text_pdus",
]
