"""API credentials: a client id and a token, kept in the central store as a SHA-256 hash.

Tokens are 32 random bytes, so a plain hash is enough (there is nothing to
guess that a slow hash would protect). The token itself is printed once, at
creation, and never stored. The table is the API's own, created here on both
store kinds.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from gateway.api.db import Reader

TOKEN_BYTES = 32

_CREATE = {
    "sqlite": """
CREATE TABLE IF NOT EXISTS api_token (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    company TEXT NOT NULL,
    scope INTEGER,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
)""",
    "postgres": """
CREATE TABLE IF NOT EXISTS api_token (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id text NOT NULL UNIQUE,
    token_sha256 text NOT NULL UNIQUE,
    company text NOT NULL,
    scope bigint,
    name text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint,
    revoked_at bigint
)""",
}
_COLUMNS = "id, client_id, company, scope, name, created_at, expires_at, revoked_at"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One credential, without its secret."""

    id: int
    client_id: str
    company: str
    scope: int | None
    name: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def ensure_table(db: Reader) -> None:
    await db.execute(_CREATE[db.dialect.name])


async def create_token(
    db: Reader, company: str, scope: int | None, name: str | None, expires_at: int | None
) -> tuple[TokenInfo, str]:
    """A new credential and its token (shown once)."""
    await ensure_table(db)
    client_id = f"{company}-{secrets.token_hex(6)}"
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = int(time.time())
    await db.execute(
        "INSERT INTO api_token (client_id, token_sha256, company, scope, name, created_at,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (client_id, token_hash(token), company, scope, name or client_id, now, expires_at),
    )
    info = await find_client(db, client_id)
    assert info is not None
    return info, token


async def list_tokens(db: Reader) -> list[TokenInfo]:
    await ensure_table(db)
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM api_token ORDER BY id")  # noqa: S608
    return [TokenInfo(*r) for r in rows]


async def revoke_token(db: Reader, client_id: str) -> bool:
    """Revoke by client id; False if there is no such (unrevoked) credential."""
    await ensure_table(db)
    changed = await db.execute(
        "UPDATE api_token SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",
        (int(time.time()), client_id),
    )
    return changed > 0


async def find_client(db: Reader, client_id: str) -> TokenInfo | None:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM api_token WHERE client_id = ?",  # noqa: S608
        (client_id,),
    )
    return TokenInfo(*rows[0]) if rows else None


async def find_token(db: Reader, token: str) -> tuple[TokenInfo, str] | None:
    """The credential whose token this is, with its stored hash."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS}, token_sha256 FROM api_token WHERE token_sha256 = ?",  # noqa: S608
        (token_hash(token),),
    )
    return (TokenInfo(*rows[0][:8]), rows[0][8]) if rows else None
