"""MQTT credentials for the store's Mosquitto: terminals' passwords and the password file.

Every MQTT client of a store broker (deploy/mosquitto/) logs in with a user
name and a password:

- a terminal: user name its terminal id in decimal (``"1001"``), password
  derived from the 16-byte key it already shares with the registry::

      password = hex(HMAC-SHA256(key, b"smiley-mqtt-password-v1")[:16])

  that is the first 16 bytes of the MAC as 32 lowercase hex characters. The
  firmware computes the same string from the same key, so no second secret
  is provisioned. The MAC is one-way: a password seen on the wire (or in a
  broker's memory) does not give the key that tags the terminal's frames.
  Test vector: terminal 1001, key ``000102030405060708090a0b0c0d0e0f``,
  password ``dd324ab43d15a47178bcb485cc544284``.
- the gateway: user name ``smiley-gateway`` (:data:`GATEWAY_USER`), with a
  password the operator chooses and gives the gateway's configuration.

:func:`write_password_file` writes the broker's ``password_file`` for every
terminal of a registry plus the gateway. The hashing is Mosquitto's own: the
installed ``mosquitto_passwd -U`` hashes a plain-text file in place. The
plain text only ever exists inside a private (0700) directory beside the
target, and the finished file replaces the old one in a single rename, so a
broker reloading meanwhile reads either the old or the new file, never half.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from gateway.errors import GatewayError, RegistryError
from gateway.registry.terminals import KEY_BYTES, Registry

GATEWAY_USER = "smiley-gateway"
PASSWORD_LABEL = b"smiley-mqtt-password-v1"
PASSWORD_BYTES = 16
MIN_GATEWAY_PASSWORD = 16
HASHING_TOOL = "mosquitto_passwd"
NEW_FILE_MODE = 0o640  # root:mosquitto, so the broker reads it after dropping root


def terminal_username(terminal_id: int) -> str:
    """The MQTT user name of a terminal: its id in decimal, as in its topics."""
    return str(terminal_id)


def terminal_password(key: bytes) -> str:
    """The MQTT password of the terminal with this 16-byte registry key."""
    if len(key) != KEY_BYTES:
        raise RegistryError(f"a terminal key is {KEY_BYTES} bytes, got {len(key)}")
    mac = hmac.new(key, PASSWORD_LABEL, hashlib.sha256).digest()
    return mac[:PASSWORD_BYTES].hex()


def check_gateway_password(password: str) -> None:
    """Refuse a gateway password that ``mosquitto_passwd -U`` would mangle, or a weak one.

    ``-U`` splits each line at ``:`` and trims blanks, so those cannot appear.
    """
    if len(password) < MIN_GATEWAY_PASSWORD:
        raise GatewayError(
            f"the {GATEWAY_USER} MQTT password must have at least {MIN_GATEWAY_PASSWORD}"
            " characters (for example: openssl rand -hex 24)"
        )
    if not all("!" <= c <= "~" and c != ":" for c in password):
        raise GatewayError(
            f"the {GATEWAY_USER} MQTT password may only hold printable ASCII without spaces or ':'"
        )


def password_entries(registry: Registry, gateway_password: str) -> list[tuple[str, str]]:
    """(user name, plain password) for the gateway, then every terminal by id."""
    check_gateway_password(gateway_password)
    entries = [(GATEWAY_USER, gateway_password)]
    for terminal_id in sorted(registry.terminals):
        terminal = registry.terminals[terminal_id]
        entries.append((terminal_username(terminal_id), terminal_password(terminal.key)))
    return entries


def write_password_file(
    path: Path,
    registry: Registry,
    gateway_password: str,
    *,
    mosquitto_passwd: str = HASHING_TOOL,
) -> int:
    """Write Mosquitto's password file at ``path``; return how many users it holds.

    Replaces any existing file, keeping its mode and, where allowed, its owner
    and group; a new file gets mode 0640. The broker picks the file up on
    restart or SIGHUP (``systemctl reload mosquitto``).
    """
    entries = password_entries(registry, gateway_password)
    program = shutil.which(mosquitto_passwd)
    if program is None:
        raise GatewayError(
            f"{mosquitto_passwd} not found: install Mosquitto (Debian: apt install mosquitto)"
        )
    directory = path.parent
    if not directory.is_dir():
        raise GatewayError(f"{path}: directory {directory} does not exist")
    try:
        private = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=directory))
    except OSError as exc:
        raise GatewayError(f"{path}: cannot write in {directory}: {exc}") from exc
    try:
        work = private / "passwd"
        plain = "".join(f"{user}:{password}\n" for user, password in entries)
        descriptor = os.open(work, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(plain)
        _hash_in_place(program, work)
        _check_hashed(work, [user for user, _ in entries])
        _take_attributes(work, path)
        with work.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(work, path)
        _fsync_directory(directory)
    except OSError as exc:
        raise GatewayError(f"{path}: cannot write the password file: {exc}") from exc
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return len(entries)


def _hash_in_place(program: str, work: Path) -> None:
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [program, "-U", str(work)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            umask=0o077,  # its backup copy of the plain text, too
        )
    except subprocess.TimeoutExpired:
        raise GatewayError(f"{program} -U did not finish within 120 s") from None
    if result.returncode != 0:
        problem = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise GatewayError(f"{program} -U failed: {problem}")


def _check_hashed(work: Path, users: list[str]) -> None:
    """Every user is there, in order, each with a hash and nothing in clear."""
    lines = work.read_text(encoding="ascii").splitlines()
    found = [line.partition(":")[0] for line in lines]
    hashed = all(line.partition(":")[2].startswith("$") for line in lines)
    if found != users or not hashed:
        raise GatewayError("mosquitto_passwd -U did not produce one hashed line per user")


def _take_attributes(work: Path, path: Path) -> None:
    try:
        old = path.stat()
    except FileNotFoundError:
        work.chmod(NEW_FILE_MODE)
        return
    work.chmod(stat.S_IMODE(old.st_mode))
    with contextlib.suppress(PermissionError):
        os.chown(work, old.st_uid, old.st_gid)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
