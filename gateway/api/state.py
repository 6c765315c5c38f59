"""What every request handler reaches through ``request.app.state.api``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.api.auth import Authenticator, Principal
from gateway.api.db import Reader


@dataclass(frozen=True, slots=True)
class ApiState:
    db: Reader
    auth: Authenticator


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def v1_principal(request: Request) -> Principal:
    return await api_state(request).auth.v1(request)


async def v2_principal(request: Request) -> Principal:
    return await api_state(request).auth.v2(request)
