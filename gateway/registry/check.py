"""``smiley-gateway check``: everything wrong with a configuration, one line per problem.

Unlike a start (which stops at the first bad key), the check goes on and
reports every problem it can find: unknown sections and keys, values of the
wrong type, bad addresses (including listen addresses that are not this
machine's), missing files, then the registry (unknown fields, duplicate ids,
keys of the wrong length, companies, locations and surveys that do not
exist), then what the gateway needs to reach (the central store, the MQTT
broker, the modem's serial port, the data directory). Each line names the
file and the key or registry entry, and says what is wrong.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import socket
import ssl
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit, urlunsplit

import aiomqtt

from gateway.errors import ConfigError, RegistryError
from gateway.registry.config import (
    SECTIONS,
    Config,
    MqttSection,
    coerce_value,
    env_overrides,
    parse_listen,
    validate_config,
)
from gateway.registry.terminals import (
    Company,
    Location,
    Survey,
    Terminal,
    parse_company,
    parse_location,
    parse_survey,
    parse_terminal,
)

REACH_TIMEOUT_S = 5.0
_REGISTRY_KINDS = ("company", "location", "survey", "terminal")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: in which file, which key or entry, and what."""

    source: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.message}"


@dataclass(slots=True)
class CheckResult:
    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    config: Config | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


async def check(
    path: Path | None, env: Mapping[str, str] | None = None, *, reach: bool = True
) -> CheckResult:
    """Check the configuration at ``path`` (with ``env`` overrides) and all it refers to."""
    env = os.environ if env is None else env
    result = CheckResult()
    source = str(path) if path is not None else "(defaults)"
    config = _check_config(path, env, source, result)
    result.config = config
    if config is None:
        return result
    if config.gateway.registry is not None:
        registry = config.path(config.gateway.registry)
        if registry.is_file():
            result.notes.append(
                f"registry {registry}: {check_registry(registry, result.problems)} terminals"
            )
    else:
        result.notes.append("no gateway.registry: the registry is read from the central store")
    _check_listen_addresses(config, source, result.problems)
    if reach:
        await _check_reachable(config, source, result)
    return result


# --- the configuration file -------------------------------------------------------------


def _check_config(
    path: Path | None, env: Mapping[str, str], source: str, result: CheckResult
) -> Config | None:
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            result.problems.append(Problem(source, "file", "configuration file not found"))
            return None
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(Problem(source, "file", f"cannot read: {exc}"))
            return None
        except tomllib.TOMLDecodeError as exc:
            result.problems.append(Problem(source, "file", f"not valid TOML: {exc}"))
            return None
    problems = result.problems
    for name in raw:
        if name not in SECTIONS:
            problems.append(
                Problem(source, f"[{name}]", f"unknown section; expected one of {sorted(SECTIONS)}")
            )
    base_dir = path.resolve().parent if path is not None else Path.cwd()
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name)
        if table is not None and not isinstance(table, dict):
            problems.append(Problem(source, f"[{name}]", "must be a table"))
            table = None
        overrides = env_overrides(name, cls, env)
        if table is None and not overrides and name not in ("gateway", "store"):
            sections[name] = None
            continue
        values = _coerced(
            name, cls, {**(table or {}), **overrides}, overrides, source=source, problems=problems
        )
        sections[name] = _validated_section(
            name, cls, values, base_dir, source=source, problems=problems
        )
    if any(s is None for n, s in sections.items() if n in ("gateway", "store")):
        return None
    config = Config(**sections, base_dir=base_dir)
    try:
        validate_config(config)
    except ConfigError as exc:  # a rule across sections
        problems.append(Problem(source, exc.key, exc.problem))
    _check_health_values(config, source, problems)
    return config


def _coerced(
    section: str,
    cls: type[Any],
    values: Mapping[str, Any],
    overrides: Mapping[str, str],
    *,
    source: str,
    problems: list[Problem],
) -> dict[str, Any]:
    hints = get_type_hints(cls)
    known = sorted(hints)
    good: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{section}.{key}" + (" (from the environment)" if key in overrides else "")
        if key not in hints:
            problems.append(Problem(source, where, f"unknown key; expected one of {known}"))
            continue
        try:
            good[key] = coerce_value(f"{section}.{key}", hints[key], value)
        except ConfigError as exc:
            problems.append(Problem(source, where, exc.problem))
    return good


def _validated_section(
    name: str,
    cls: type[Any],
    values: dict[str, Any],
    base_dir: Path,
    *,
    source: str,
    problems: list[Problem],
) -> Any:
    """The section with every value that passes; each failing key reported once.

    Validation stops at a section's first bad key, so the key it names is
    reported and dropped (back to its default) and the rest is validated again.
    """
    values = dict(values)
    for _ in range(len(values) + 1):
        section = cls(**values)
        alone = Config(**{name: section}, base_dir=base_dir)
        try:
            validate_config(alone)
        except ConfigError as exc:
            problems.append(Problem(source, exc.key, exc.problem))
            field_name = exc.key.partition(".")[2]
            if exc.key.partition(".")[0] != name or field_name not in values:
                return section if name in ("gateway", "store") else None
            del values[field_name]
            continue
        return section
    return None


def _check_health_values(config: Config, source: str, problems: list[Problem]) -> None:
    h = config.health
    if h is None:
        return
    for key in ("silent_after_s", "clock_drift_s", "store_outage_budget_s", "probe_interval_s",
                "status_interval_s"):  # fmt: skip
        if getattr(h, key) <= 0:
            problems.append(Problem(source, f"health.{key}", "must be positive"))
    if not 0 <= h.low_battery_pct <= 100:
        problems.append(Problem(source, "health.low_battery_pct", "must be 0..100"))


def _check_listen_addresses(config: Config, source: str, problems: list[Problem]) -> None:
    """A listen address must be one of this machine's (binding port 0 there must work)."""
    for key, section in (("tcp.listen", config.tcp), ("health.listen", config.health),
                         ("api.listen", config.api)):  # fmt: skip
        if section is None:
            continue
        try:
            host, _ = parse_listen(key, section.listen)
        except ConfigError:
            continue  # reported already
        try:
            infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            problems.append(Problem(source, key, f"cannot resolve {host!r}: {exc.strerror}"))
            continue
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address[0], 0))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    problems.append(
                        Problem(source, key, f"{host} is not an address of this machine")
                    )
                else:
                    problems.append(Problem(source, key, f"cannot listen on {host}: {exc}"))


# --- the registry -----------------------------------------------------------------------


def check_registry(path: Path, problems: list[Problem]) -> int:
    """Append every problem of the registry file; return how many terminals it defines."""
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(source, "file", f"cannot read: {exc}"))
        return 0
    except tomllib.TOMLDecodeError as exc:
        problems.append(Problem(source, "file", f"not valid TOML: {exc}"))
        return 0
    for name in data:
        if name not in _REGISTRY_KINDS:
            problems.append(
                Problem(source, f"[[{name}]]", f"unknown table; expected {list(_REGISTRY_KINDS)}")
            )
    parsers = {"company": parse_company, "location": parse_location, "survey": parse_survey,
               "terminal": parse_terminal}  # fmt: skip
    entries: dict[str, dict[Any, Any]] = {kind: {} for kind in _REGISTRY_KINDS}
    for kind in _REGISTRY_KINDS:
        tables = data.get(kind, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            problems.append(Problem(source, kind, f"must be an array of tables ([[{kind}]])"))
            continue
        ids = Counter(t.get("id") for t in tables)
        for index, table in enumerate(tables, 1):
            where = f"{kind} {table.get('id', f'#{index} (no id)')!r}"
            if table.get("id") is not None and ids[table.get("id")] > 1:
                if table["id"] not in entries[kind]:
                    problems.append(
                        Problem(source, where, f"duplicate {kind} id ({ids[table['id']]} entries)")
                    )
                    entries[kind][table["id"]] = None  # one line per duplicated id
                continue
            try:
                entries[kind][table.get("id")] = parsers[kind](table)
            except RegistryError as exc:
                problems.append(Problem(source, where, _without_where(str(exc))))
    _check_references(entries, source, problems)
    return sum(1 for t in entries["terminal"].values() if t is not None)


def _without_where(message: str) -> str:
    """``terminal 5: key ...`` -> ``key ...`` (the entry is named already)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.split(" ")[0] in _REGISTRY_KINDS else message


def _check_references(
    entries: dict[str, dict[Any, Any]], source: str, problems: list[Problem]
) -> None:
    companies: dict[str, Company] = entries["company"]
    locations: dict[int, Location] = entries["location"]
    surveys: dict[int, Survey] = entries["survey"]
    terminals: dict[int, Terminal] = entries["terminal"]
    for loc in locations.values():
        if loc is None:
            continue
        where = f"location {loc.id}"
        if loc.company not in companies:
            problems.append(Problem(source, where, f"company {loc.company!r} does not exist"))
        if loc.parent is not None and loc.parent not in locations:
            problems.append(Problem(source, where, f"parent {loc.parent} does not exist"))
    for survey in surveys.values():
        if survey is not None and survey.company not in companies:
            problems.append(
                Problem(source, f"survey {survey.id}", f"company {survey.company!r} does not exist")
            )
    keys = Counter(t.key for t in terminals.values() if t is not None)
    for t in terminals.values():
        if t is None:
            continue
        where = f"terminal {t.id}"
        point = locations.get(t.location)
        if t.location not in locations:
            problems.append(Problem(source, where, f"location {t.location} does not exist"))
        elif point is not None and not point.is_experience_point:
            problems.append(
                Problem(source, where, f"location {t.location} is a group (it has no timezone)")
            )
        if t.survey not in surveys:
            problems.append(Problem(source, where, f"survey {t.survey} does not exist"))
        if keys[t.key] > 1:
            problems.append(Problem(source, where, "key is shared with another terminal"))


# --- what the gateway must reach ---------------------------------------------------------


async def _check_reachable(config: Config, source: str, result: CheckResult) -> None:
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
