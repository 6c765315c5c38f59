"""Errors the API answers with: an HTTP status, a message and the parameter at fault.

Part of the gateway's one hierarchy (see :mod:`gateway.errors`).
"""

from __future__ import annotations

from gateway.errors import GatewayError


class ApiError(GatewayError):
    """Answered as ``{"status", "error", "parameter"}`` JSON with ``status``."""

    def __init__(self, status: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter


class BadParameter(ApiError):
    """400 naming the query parameter that is malformed or out of range."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(400, f"{parameter}: {message}", parameter)


class NotFound(ApiError):
    """404: absent, or outside the credential's scope (the two are not told apart)."""

    def __init__(self, what: str) -> None:
        super().__init__(404, f"{what} not found")
