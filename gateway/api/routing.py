"""Routes answering GET and HEAD (HEAD kept out of the OpenAPI document: it mirrors GET)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

F = TypeVar("F", bound=Callable[..., Any])


def get_and_head(router: APIRouter, path: str, **kwargs: Any) -> Callable[[F], F]:
    def register(handler: F) -> F:
        router.api_route(path, methods=["HEAD"], include_in_schema=False, **kwargs)(handler)
        router.api_route(path, methods=["GET"], **kwargs)(handler)
        return handler

    return register
