"""Terminal ids and keys from a registry TOML file (the gateway's ``[[terminal]]`` tables).

Each ``[[terminal]]`` table needs ``id`` (an integer, or a string of one: decimal,
or hex with ``0x``) and ``key`` (32 hex digits). Other tables and keys are ignored.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from firmware_sim.errors import RegistryError

KEY_SIZE = 16
MAX_TERMINAL_ID = 0xFFFFFFFF


def load_registry(path: Path | str) -> dict[int, bytes]:
    """Terminal id to 16-byte key, in file order."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"cannot read registry {path}: {exc}") from exc
    return parse_registry(data, source=str(path))


def parse_registry(data: dict[str, Any], *, source: str = "registry") -> dict[int, bytes]:
    """Terminal id to key from an already parsed TOML document."""
    entries = data.get("terminal", [])
    if not isinstance(entries, list):
        raise RegistryError(f"{source}: 'terminal' must be an array of tables")
    keys: dict[int, bytes] = {}
    for index, entry in enumerate(entries):
        where = f"{source}: terminal #{index + 1}"
        if not isinstance(entry, dict):
            raise RegistryError(f"{where} is not a table")
        terminal_id = _terminal_id(entry.get("id"), where)
        if terminal_id in keys:
            raise RegistryError(f"{where}: id {terminal_id} appears twice")
        keys[terminal_id] = _key(entry.get("key"), f"{where} (id {terminal_id})")
    return keys


def _terminal_id(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise RegistryError(f"{where}: id must be an integer, not {value!r}")
    if isinstance(value, int):
        terminal_id = value
    elif isinstance(value, str):
        try:
            terminal_id = int(value, 16) if value.lower().startswith("0x") else int(value)
        except ValueError:
            raise RegistryError(f"{where}: id {value!r} is not a number") from None
    else:
        raise RegistryError(f"{where}: id is missing or not an integer")
    if not 0 <= terminal_id <= MAX_TERMINAL_ID:
        raise RegistryError(f"{where}: id {terminal_id} does not fit in 32 bits")
    return terminal_id


def _key(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise RegistryError(f"{where}: key must be a hex string")
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise RegistryError(f"{where}: key is not hex") from None
    if len(key) != KEY_SIZE:
        raise RegistryError(f"{where}: key has {len(key)} bytes, not {KEY_SIZE}")
    return key
