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
from firmware_sim.mqtt import MqttLinkOptions, PasswordSource
from firmware_sim.mqtt_client import MqttProtocol
from firmware_sim.patterns import Child, LunchQueue, Pattern, PressBudget, Steady
from firmware_sim.registry import load_registry, parse_registry
from firmware_sim.report import FleetReport, TerminalReport
from firmware_sim.tcp import LinkOptions
from firmware_sim.terminal import POWER_ON_TIME, MadePress, Terminal, TerminalClock

__all__ = [
    "POWER_ON_TIME",
    "AnswerTimeout",
    "BackoffOptions",
    "Child",
    "ConnectFailed",
    "ConnectionLost",
    "Fault",
    "FaultOptions",
    "Fleet",
    "FleetOptions",
    "FleetReport",
    "GatewayProtocolError",
    "LinkOptions",
    "LunchQueue",
    "MadePress",
    "MqttLinkOptions",
    "MqttProtocol",
    "NotAllAcked",
    "PasswordSource",
    "Pattern",
    "PressBudget",
    "Refused",
    "RegistryError",
    "ScheduledFault",
    "SessionEnded",
    "SimulatorError",
    "StateError",
    "Steady",
    "Terminal",
    "TerminalClock",
    "TerminalReport",
    "TerminalStopped",
    "load_registry",
    "parse_registry",
]
