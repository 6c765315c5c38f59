"""Errors of the gateway.

Hierarchy::

    GatewayError
    ├── ConfigError        a configuration key is missing or wrong (names the key)
    ├── RegistryError      the terminal registry file is inconsistent
    ├── OutboxBusy         the outbox cannot commit now (disk full, I/O error, budget)
    ├── StoreError         the central store refused or could not be reached
    ├── SchemaError        a database was written by a newer gateway
    ├── ModemError         the modem refused a command, or its port closed
    │   ├── ModemTimeout   the modem did not answer a command in time (also a TimeoutError)
    │   ├── SendRefused    an SMS was not sent (+CMS ERROR, or the modem not ready);
    │   │                  ``transient``: the same send may succeed later
    │   └── SendUnknown    AT+CMGS went out and no answer came: it may have been sent
    ├── WebPressRefused    a web smiley's request refused whole, with its 4xx and reason
    └── ApiError           a query API request refused with an HTTP status (gateway/api/errors.py)
        ├── BadParameter   400, naming the query parameter at fault
        ├── NotFound       404, absent or outside the credential's scope
        ├── Unauthorized   401, no usable credential (gateway/api/auth.py)
        └── TooManyRequests 429, over the rate limit (gateway/api/auth.py)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocols.at import Response


class GatewayError(Exception):
    """Base of every error raised by :mod:`gateway`."""


class ConfigError(GatewayError):
    """A configuration value is invalid; ``key`` is its dotted name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class RegistryError(GatewayError):
    """The terminal registry is inconsistent; the message says where."""


class OutboxBusy(GatewayError):
    """The outbox could not commit; the caller answers NAK BUSY and keeps nothing."""


class StoreError(GatewayError):
    """The central store could not take a batch; the forwarder retries later."""


class SchemaError(GatewayError):
    """A database carries a schema version this gateway does not know."""


class ModemError(GatewayError):
    """The modem refused a command it needs to take messages, or its port closed."""


class SendRefused(ModemError):
    """An SMS the modem did not send: ``code`` is the +CMS ERROR number (None when the
    modem was not ready or gave no number); ``transient``: try the same send later."""

    def __init__(self, reason: str, *, code: int | None, transient: bool) -> None:
        super().__init__(reason)
        self.code = code
        self.transient = transient


class SendUnknown(ModemError):
    """The SMS went to the modem (the PDU and Ctrl-Z written) and no answer came back
    (a timeout, a reset, the port lost): it may have been sent; never send it again."""


class ModemTimeout(ModemError, TimeoutError):
    """No final result to ``command`` in time; ``partial`` is what did come."""

    def __init__(self, command: str, partial: Response | None) -> None:
        super().__init__(f"no answer to {command}")
        self.command = command
        self.partial = partial


class WebPressRefused(GatewayError):
    """A web smiley's request refused whole: its HTTP ``status`` and quarantine ``reason``."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
