"""API credentials: a client id and a token, kept in the central store as a SHA-256 hash.

Tokens are 32 random bytes, so a plain hash is enough (there is nothing to
guess that a slow hash would protect). The token itself is printed once, at
creation, and never stored. The table is the API's own, created on first use
by the store's reader (on both store kinds).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from gateway.api.db import Reader
from gateway.stores.reads import NewToken, TokenInfo

__all__ = [
    "TokenInfo",
    "create_token",
    "ensure_table",
    "find_token",
    "list_tokens",
    "revoke_token",
    "token_hash",
]

TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def ensure_table(db: Reader) -> None:
    await db.ensure_token_table()


async def create_token(
    db: Reader, company: str, scope: int | None, name: str | None, expires_at: int | None
) -> tuple[TokenInfo, str]:
    """A new credential and its token (shown once)."""
    await ensure_table(db)
    client_id = f"{company}-{secrets.token_hex(6)}"
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = int(time.time())
    await db.add_token(
        NewToken(client_id, token_hash(token), company, scope, name or client_id, now, expires_at)
    )
    info = await find_client(db, client_id)
    assert info is not None
    return info, token


async def list_tokens(db: Reader) -> list[TokenInfo]:
    await ensure_table(db)
    return await db.tokens()


async def revoke_token(db: Reader, client_id: str) -> bool:
    """Revoke by client id; False if there is no such (unrevoked) credential."""
    await ensure_table(db)
    return await db.revoke_token(client_id, int(time.time()))


async def find_client(db: Reader, client_id: str) -> TokenInfo | None:
    return await db.token_of_client(client_id)


async def find_token(db: Reader, token: str) -> tuple[TokenInfo, str] | None:
    """The credential whose token this is, with its stored hash."""
    return await db.token_by_hash(token_hash(token))
