"""Errors of the terminal simulator.

Hierarchy::

    SimulatorError
    ├── RegistryError            the terminal registry file cannot be read
    ├── StateError               the fleet's state file cannot be read
    ├── ConnectFailed            no connection (gateway or broker unreachable, CONNECT refused)
    ├── SessionEnded             one TCP or MQTT session is over; the terminal reconnects
    │   ├── ConnectionLost       EOF, reset, or the simulator dropped it on purpose
    │   ├── Refused              the gateway answered HELLO with a NAK
    │   ├── GatewayProtocolError the gateway broke the protocol (bad frame, answer mismatch)
    │   └── AnswerTimeout        no WELCOME, ACK or NAK in time (also a TimeoutError)
    ├── TerminalStopped          the gateway does not know the terminal (UNKNOWN_TERMINAL)
    └── NotAllAcked              waiting for every press to be ACKed timed out (TimeoutError)
"""

from __future__ import annotations


class SimulatorError(Exception):
    """Base of every error raised by :mod:`firmware_sim`."""


class RegistryError(SimulatorError):
    """The registry TOML file is missing, unreadable, or holds a bad terminal entry."""


class StateError(SimulatorError):
    """The fleet state file exists but cannot be understood."""


class ConnectFailed(SimulatorError):
    """The connection to the gateway (TCP) or the broker (MQTT) could not be opened;
    the terminal tries again."""

    def __init__(self, detail: str, *, terminal_id: int) -> None:
        super().__init__(f"terminal {terminal_id}: cannot connect: {detail}")
        self.detail = detail
        self.terminal_id = terminal_id


class SessionEnded(SimulatorError):
    """A session ended; the terminal keeps its records and reconnects."""

    reason = "session ended"

    def __init__(self, detail: str, *, terminal_id: int) -> None:
        super().__init__(f"terminal {terminal_id}: {self.reason}: {detail}")
        self.detail = detail
        self.terminal_id = terminal_id


class ConnectionLost(SessionEnded):
    reason = "connection lost"


class Refused(SessionEnded):
    reason = "refused at HELLO"


class GatewayProtocolError(SessionEnded):
    reason = "gateway broke the protocol"


class AnswerTimeout(SessionEnded, TimeoutError):
    reason = "no answer in time"


class TerminalStopped(SimulatorError):
    """The gateway answered NAK UNKNOWN_TERMINAL: this terminal stops for good."""

    def __init__(self, terminal_id: int, outstanding: int = 0) -> None:
        super().__init__(
            f"terminal {terminal_id} is unknown to the gateway and stopped"
            f" with {outstanding} presses not ACKed"
        )
        self.terminal_id = terminal_id
        self.outstanding = outstanding


class NotAllAcked(SimulatorError, TimeoutError):
    """Timed out waiting until every press made was ACKed."""

    def __init__(self, outstanding: int, by_terminal: dict[int, int]) -> None:
        worst = sorted(by_terminal.items(), key=lambda item: -item[1])[:5]
        super().__init__(f"{outstanding} presses not ACKed; most by terminal: {worst}")
        self.outstanding = outstanding
        self.by_terminal = by_terminal
