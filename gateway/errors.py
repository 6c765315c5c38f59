"""Errors of the gateway.

Hierarchy::

    GatewayError
    ├── ConfigError        a configuration key is missing or wrong (names the key)
    ├── RegistryError      the terminal registry file is inconsistent
    ├── OutboxBusy         the outbox cannot commit now (disk full, I/O error, budget)
    ├── StoreError         the central store refused or could not be reached
    └── SchemaError        a database was written by a newer gateway
"""

from __future__ import annotations


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
