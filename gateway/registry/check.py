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

import errno
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

from gateway.errors import ConfigError
from gateway.registry.check_registry import check_registry
from gateway.registry.config import (
    SECTIONS,
    Config,
    coerce_value,
    env_overrides,
    parse_listen,
    validate_config,
)
from gateway.registry.problems import CheckResult, Problem
from gateway.registry.reach import check_reachable


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
        await check_reachable(config, source, result)
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
                "status_interval_s", "history_interval_s"):  # fmt: skip
        if getattr(h, key) <= 0:
            problems.append(Problem(source, f"health.{key}", "must be positive"))
    if not 0 <= h.low_battery_pct <= 100:
        problems.append(Problem(source, "health.low_battery_pct", "must be 0..100"))


def _check_listen_addresses(config: Config, source: str, problems: list[Problem]) -> None:
    """A listen address must be one of this machine's (binding port 0 there must work)."""
    for key, section in (("tcp.listen", config.tcp), ("health.listen", config.health),
                         ("api.listen", config.api), ("web.listen", config.web)):  # fmt: skip
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
