"""Configuration: one TOML file, every key overridable by an environment variable.

``SMILEY_<SECTION>_<KEY>`` overrides ``[section] key`` (for example
``SMILEY_TCP_LISTEN=0.0.0.0:7700``). Relative paths are taken from the
directory of the configuration file, so a service finds its files wherever it
is started. A section that is absent (and not named by any variable) is off.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from gateway.errors import ConfigError

ENV_PREFIX = "SMILEY_"


@dataclass(frozen=True, slots=True)
class GatewaySection:
    data_dir: Path = Path("var")
    registry: Path | None = None
    outbox_max_mb: int = 1024
    stats_interval_s: float = 10.0
    commit_batch_max: int = 5000
    log_format: str = "auto"
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class TcpSection:
    listen: str = "127.0.0.1:7700"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    idle_timeout_s: float = 180.0
    pipeline_depth: int = 16
    max_connections: int = 20000
    proxy_protocol: bool = False
    """Every connection starts with a PROXY header (v1 or v2) from a load balancer."""


@dataclass(frozen=True, slots=True)
class MqttSection:
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "smiley-gateway"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    max_in_flight: int = 200
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    reconnect_max_s: float = 30.0
    shared_group: str = ""
    """An MQTT 5 shared subscription group: instances in one group share the terminals'
    messages. Empty: this instance alone takes them all."""

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")

    def host_port(self) -> tuple[str, int]:
        scheme, _, rest = self.url.partition("://")
        default = 8883 if scheme == "mqtts" else 1883
        host, sep, port = rest.rstrip("/").rpartition(":")
        if not sep:
            return rest.rstrip("/"), default
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class StoreSection:
    url: str = "sqlite:///var/central.db"
    forward_batch: int = 2000
    retry_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class SmsSection:
    port: str = "/dev/ttyUSB2"  # a device path or socket://HOST:PORT
    baudrate: int = 115200
    pin: str | None = None
    rtscts: bool = False
    command_timeout_s: float = 10.0
    poll_interval_s: float = 60.0  # +CMGL sweep, for indications lost in resets
    keepalive_s: float = 30.0
    reassembly_timeout_h: float = 24.0
    reopen_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ApiSection:
    listen: str = "127.0.0.1:8080"
    rate_limit: str = "600/minute"  # per token
    max_connections: int = 256  # connections and requests at once; 503 beyond (memory bound)
    tls_cert: Path | None = None  # HTTPS (the vendor's clients expect it); both or neither
    tls_key: Path | None = None
    # How long a token or registry change made through another instance (or the
    # CLI) may go unseen: the API keeps what it read from the store this long.
    refresh_s: float = 5.0


@dataclass(frozen=True, slots=True)
class WebSection:
    """The web smiley pages and their presses; faces the public, apart from API and health."""

    listen: str = "127.0.0.1:8090"
    rate_limit: str = "60/minute"  # per client address
    max_connections: int = 512  # connections and requests at once; 503 beyond (memory bound)
    tls_cert: Path | None = None  # both or neither
    tls_key: Path | None = None


@dataclass(frozen=True, slots=True)
class HealthSection:
    listen: str = "127.0.0.1:9108"  # /healthz, /readyz, /metrics
    watchdog: bool = True  # systemd WATCHDOG=1 from the event loop when NOTIFY_SOCKET is set
    silent_after_s: float = 900.0  # a terminal quiet this long is flagged silent
    low_battery_pct: int = 20
    clock_drift_s: float = 120.0
    store_outage_budget_s: float = 3600.0  # /readyz stays ready this long with the store down
    probe_interval_s: float = 5.0  # how often the store is probed for /readyz
    status_interval_s: float = 60.0  # how often the fleet status is saved to status.db
    history_interval_s: float = 10.0  # how often the console's history is sampled
    console_user: str | None = None  # with console_password_file: HTTP Basic on the console
    console_password_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewaySection = field(default_factory=GatewaySection)
    tcp: TcpSection | None = None
    mqtt: MqttSection | None = None
    sms: SmsSection | None = None
    store: StoreSection = field(default_factory=StoreSection)
    api: ApiSection | None = None
    health: HealthSection | None = None
    web: WebSection | None = None
    base_dir: Path = Path()

    def path(self, value: Path) -> Path:
        """``value`` resolved against the configuration file's directory."""
        return value if value.is_absolute() else (self.base_dir / value).resolve()

    @property
    def data_dir(self) -> Path:
        return self.path(self.gateway.data_dir)

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.db"

    def store_url(self) -> str:
        """The store URL with a relative sqlite path made absolute."""
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str(self.path(Path(url[len(prefix) :])))
        return url


SECTIONS: dict[str, type[Any]] = {
    "gateway": GatewaySection,
    "tcp": TcpSection,
    "mqtt": MqttSection,
    "sms": SmsSection,
    "store": StoreSection,
    "api": ApiSection,
    "health": HealthSection,
    "web": WebSection,
}
_ALWAYS_ON = {"gateway", "store"}
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_API_REFRESH_S = 300.0  # a change made elsewhere is seen within 5 minutes at worst


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from ``env`` and validate; raise ConfigError naming the bad key."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(path), "configuration file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(name, f"unknown section; expected one of {sorted(SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name)
        if values is not None and not isinstance(values, dict):
            raise ConfigError(name, "must be a table")
        overrides = env_overrides(name, cls, env)
        if values is None and not overrides and name not in _ALWAYS_ON:
            sections[name] = None
            continue
        sections[name] = _build_section(name, cls, {**(values or {}), **overrides})
    base_dir = path.resolve().parent if path is not None else Path.cwd()
    config = Config(**sections, base_dir=base_dir)
    validate_config(config)
    return config


def env_overrides(section: str, cls: type[Any], env: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for f in dataclasses.fields(cls):
        var = f"{ENV_PREFIX}{section}_{f.name}".upper()
        if var in env:
            found[f.name] = env[var]
    return found


def _build_section(section: str, cls: type[Any], values: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{section}.{key}", f"unknown key; expected one of {sorted(known)}")
        kwargs[key] = coerce_value(f"{section}.{key}", hints[key], value)
    return cls(**kwargs)


def coerce_value(key: str, hint: Any, value: Any) -> Any:
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)
    if optional:
        hint = next(a for a in get_args(hint) if a is not type(None))
        if value in ("", None):
            return None
    try:
        if hint is bool:
            return _coerce_bool(value)
        if hint is int and isinstance(value, int | str) and not isinstance(value, bool):
            return int(value)
        if hint is float and isinstance(value, int | float | str) and not isinstance(value, bool):
            return float(value)
        if hint is str and isinstance(value, str):
            return value
        if hint is Path and isinstance(value, str) and value:
            return Path(value)
    except ValueError:
        pass
    raise ConfigError(key, f"expected {getattr(hint, '__name__', hint)}, got {value!r}")


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError(value)


def parse_listen(key: str, listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` allowed); raise ConfigError naming ``key``."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"expected host:port, got {listen!r}")
    return host, int(port)


def validate_config(config: Config) -> None:
    g = config.gateway
    if g.outbox_max_mb <= 0:
        raise ConfigError("gateway.outbox_max_mb", "must be positive")
    if g.stats_interval_s <= 0:
        raise ConfigError("gateway.stats_interval_s", "must be positive")
    if g.commit_batch_max <= 0:
        raise ConfigError("gateway.commit_batch_max", "must be positive")
    if g.log_format not in LOG_FORMATS:
        raise ConfigError("gateway.log_format", f"expected one of {LOG_FORMATS}")
    if g.log_level not in LOG_LEVELS:
        raise ConfigError("gateway.log_level", f"expected one of {LOG_LEVELS}")
    _validate_store_url(config.store.url)
    if config.store.forward_batch <= 0:
        raise ConfigError("store.forward_batch", "must be positive")
    if config.tcp is not None:
        t = config.tcp
        parse_listen("tcp.listen", t.listen)
        validate_tls(config, "tcp", t.tls_cert, t.tls_key)
        if t.idle_timeout_s <= 0:
            raise ConfigError("tcp.idle_timeout_s", "must be positive")
        if t.pipeline_depth <= 0:
            raise ConfigError("tcp.pipeline_depth", "must be positive")
        if t.proxy_protocol and t.tls_cert is not None:
            # The header comes before the TLS handshake, which asyncio makes at accept.
            raise ConfigError(
                "tcp.proxy_protocol", "not with tls_cert: terminate TLS at the load balancer"
            )
    if config.mqtt is not None:
        _validate_mqtt(config, config.mqtt)
    if config.sms is not None:
        _validate_sms(config.sms)
    if config.api is not None:
        parse_listen("api.listen", config.api.listen)
        parse_rate_limit("api.rate_limit", config.api.rate_limit)
        if config.api.max_connections < 1:
            raise ConfigError("api.max_connections", "must be at least 1")
        if not 0 <= config.api.refresh_s <= MAX_API_REFRESH_S:
            raise ConfigError("api.refresh_s", f"must be from 0 to {MAX_API_REFRESH_S:g} seconds")
        validate_tls(config, "api", config.api.tls_cert, config.api.tls_key)
    if config.health is not None:
        h = config.health
        parse_listen("health.listen", h.listen)
        if h.history_interval_s <= 0:
            raise ConfigError("health.history_interval_s", "must be positive")
        if (h.console_user is None) != (h.console_password_file is None):
            raise ConfigError("health.console_password_file", "goes with console_user")
        secret = h.console_password_file
        if secret is not None and not config.path(secret).is_file():
            raise ConfigError(
                "health.console_password_file", f"file {config.path(secret)} not found"
            )
    if config.web is not None:
        _validate_web(config, config.web)
    if g.registry is not None and not config.path(g.registry).is_file():
        raise ConfigError("gateway.registry", f"file {config.path(g.registry)} not found")


def _validate_web(config: Config, web: WebSection) -> None:
    parse_listen("web.listen", web.listen)
    parse_rate_limit("web.rate_limit", web.rate_limit)
    if web.max_connections < 1:
        raise ConfigError("web.max_connections", "must be at least 1")
    validate_tls(config, "web", web.tls_cert, web.tls_key)


def _validate_store_url(url: str) -> None:
    expected = "expected sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"
    if url.startswith("sqlite:///"):
        return
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError("store.url", expected)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("store.url", f"bad port; {expected}") from None
    if port == 0:
        raise ConfigError("store.url", f"bad port; {expected}")
    if not parts.path.strip("/"):
        raise ConfigError("store.url", f"the database name is missing; {expected}")


def _validate_mqtt(config: Config, m: MqttSection) -> None:
    scheme, sep, rest = m.url.partition("://")
    if not sep or scheme not in ("mqtt", "mqtts") or not rest:
        raise ConfigError("mqtt.url", f"expected mqtt://HOST[:PORT] or mqtts://..., got {m.url!r}")
    try:
        host, port = m.host_port()
    except ValueError:
        raise ConfigError("mqtt.url", f"bad port in {m.url!r}") from None
    if not host or not 0 < port < 65536:
        raise ConfigError("mqtt.url", f"expected mqtt://HOST[:PORT], got {m.url!r}")
    if not m.client_id:
        raise ConfigError(
            "mqtt.client_id", "a fixed client id is needed for the persistent session"
        )
    if not 1 <= m.max_in_flight <= 65535:
        raise ConfigError("mqtt.max_in_flight", "must be 1..65535 (MQTT Receive Maximum)")
    if (m.cert_file is None) != (m.key_file is None):
        raise ConfigError("mqtt.key_file", "cert_file and key_file go together")
    for key, p in (("mqtt.ca_file", m.ca_file), ("mqtt.cert_file", m.cert_file),
                   ("mqtt.key_file", m.key_file)):  # fmt: skip
        if p is not None and not config.path(p).is_file():
            raise ConfigError(key, f"file {config.path(p)} not found")
    if m.session_expiry_s <= 0:
        raise ConfigError("mqtt.session_expiry_s", "must be positive: the session must persist")
    # MQTT v5 section 4.8.2: a ShareName holds no "/", "+" or "#".
    if any(c in m.shared_group for c in "/+#") or not m.shared_group.isprintable():
        raise ConfigError(
            "mqtt.shared_group", f"a share name without '/', '+', '#': {m.shared_group!r}"
        )


def validate_tls(config: Config, section: str, cert: Path | None, key: Path | None) -> None:
    """A listener's certificate and key: both or neither, and both files there."""
    if (cert is None) != (key is None):
        raise ConfigError(f"{section}.tls_key", "tls_cert and tls_key go together")
    for name, p in ((f"{section}.tls_cert", cert), (f"{section}.tls_key", key)):
        if p is not None and not config.path(p).is_file():
            raise ConfigError(name, f"file {config.path(p)} not found")


def _validate_sms(s: SmsSection) -> None:
    if not s.port:
        raise ConfigError("sms.port", "expected a device path or socket://HOST:PORT")
    if s.port.startswith("socket://"):
        parse_listen("sms.port", s.port[len("socket://") :])
    if s.baudrate <= 0:
        raise ConfigError("sms.baudrate", "must be positive")
    if s.pin is not None and not (s.pin.isdigit() and 4 <= len(s.pin) <= 8):
        raise ConfigError("sms.pin", "a SIM PIN is 4 to 8 digits")
    for key in ("command_timeout_s", "poll_interval_s", "keepalive_s", "reassembly_timeout_h",
                "reopen_max_s"):  # fmt: skip
        if getattr(s, key) <= 0:
            raise ConfigError(f"sms.{key}", "must be positive")


_RATE_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


def parse_rate_limit(key: str, value: str) -> tuple[int, float]:
    """``"600/minute"`` as (600 requests, 60.0 seconds); raise ConfigError naming ``key``."""
    count, sep, unit = value.partition("/")
    if not sep or not count.strip().isdigit() or int(count) <= 0 or unit.strip() not in _RATE_UNITS:
        raise ConfigError(key, f"expected N/second, N/minute or N/hour, got {value!r}")
    return int(count), _RATE_UNITS[unit.strip()]
