"""`check` of what the gateway must reach: the data directory, the store, the broker, the modem."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiomqtt

from gateway.registry.config import (
    Config,
    MqttSection,
    parse_listen,
)
from gateway.registry.problems import CheckResult, Problem

REACH_TIMEOUT_S = 5.0


async def check_reachable(config: Config, source: str, result: CheckResult) -> None:
    problems = result.problems
    data_dir = config.data_dir
    existing = next((p for p in (data_dir, *data_dir.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        problems.append(Problem(source, "gateway.data_dir", f"{data_dir} is not writable"))
    try:
        await asyncio.wait_for(_reach_store(config), REACH_TIMEOUT_S)
        result.notes.append(f"store {_redacted(config.store.url)}: reachable")
    except (OSError, TimeoutError, ValueError, ImportError) as exc:
        problems.append(Problem(source, "store.url", _unreachable(config.store.url, exc)))
    except Exception as exc:  # asyncpg's own errors too: any failure is the finding
        problems.append(Problem(source, "store.url", _unreachable(config.store.url, exc)))
    if config.mqtt is not None:
        try:
            await asyncio.wait_for(_reach_broker(config, config.mqtt), REACH_TIMEOUT_S)
            result.notes.append(f"broker {config.mqtt.url}: reachable")
        except (aiomqtt.MqttError, OSError, TimeoutError, ssl.SSLError) as exc:
            problems.append(Problem(source, "mqtt.url", _unreachable(config.mqtt.url, exc)))
    if config.sms is not None:
        problem = await _reach_serial(config.sms.port)
        if problem is not None:
            problems.append(Problem(source, "sms.port", problem))


def _unreachable(url: str, exc: BaseException) -> str:
    return f"cannot reach {_redacted(url)}: {str(exc) or type(exc).__name__}"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def _reach_store(config: Config) -> None:
    url = config.store_url()
    if url.startswith("sqlite:///"):
        _check_sqlite_path(Path(url[len("sqlite://") :]))
        return
    import asyncpg  # noqa: PLC0415 - only for a PostgreSQL store

    conn = await asyncpg.connect(url, timeout=REACH_TIMEOUT_S)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _check_sqlite_path(path: Path) -> None:
    directory = next((p for p in (path.parent, *path.parents) if p.exists()), None)
    if directory is None or not os.access(directory, os.W_OK | os.X_OK):
        raise OSError(f"{path.parent} is not writable")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise OSError(f"{path} is not readable and writable")


async def _reach_broker(config: Config, m: MqttSection) -> None:
    host, port = m.host_port()
    tls = None
    if m.tls:
        tls = ssl.create_default_context(cafile=str(config.path(m.ca_file)) if m.ca_file else None)
        if m.cert_file is not None and m.key_file is not None:
            tls.load_cert_chain(config.path(m.cert_file), config.path(m.key_file))
    # Its own client id: the gateway's persistent session must not be taken over.
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"{m.client_id}-check-{os.getpid()}",
        username=m.username,
        password=m.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=tls,
        timeout=REACH_TIMEOUT_S,
    )
    async with client:
        pass


async def _reach_serial(port: str) -> str | None:
    if port.startswith("socket://"):
        host, number = parse_listen("sms.port", port[len("socket://") :])
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, number), REACH_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            return f"cannot reach {port}: {str(exc) or type(exc).__name__}"
        writer.close()
        return None
    return _serial_device_problem(Path(port))


def _serial_device_problem(device: Path) -> str | None:
    port = str(device)
    if not device.exists():
        return (
            f"serial device {port} does not exist: is the modem plugged in and named by"
            " deploy/99-smiley-modem.rules?"
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return f"no read/write permission on {port}: the service user needs the dialout group"
    return None
