from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.registry.config import load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_issue_example_loads_with_paths_from_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "terminals.toml").write_text("", encoding="utf-8")
    config = load_config(
        write(
            tmp_path,
            """
[gateway]
data_dir = "var"
registry = "terminals.toml"
[tcp]
listen = "127.0.0.1:7700"
[store]
url = "sqlite:///var/central.db"
""",
        ),
        env={},
    )
    assert config.data_dir == tmp_path / "var"
    assert config.store_url() == f"sqlite:///{tmp_path}/var/central.db"
    assert config.tcp is not None
    assert config.tcp.listen == "127.0.0.1:7700"
    assert config.tcp.idle_timeout_s == 180


def test_absent_section_is_off_and_env_turns_it_on(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway]\n")
    assert load_config(path, env={}).tcp is None
    config = load_config(path, env={"SMILEY_TCP_LISTEN": "0.0.0.0:7800"})
    assert config.tcp is not None
    assert config.tcp.listen == "0.0.0.0:7800"


def test_env_overrides_every_key_with_its_type(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway]\noutbox_max_mb = 10\n[tcp]\n")
    config = load_config(
        path,
        env={
            "SMILEY_GATEWAY_OUTBOX_MAX_MB": "20",
            "SMILEY_TCP_IDLE_TIMEOUT_S": "2.5",
            "SMILEY_STORE_URL": "sqlite:////tmp/x.db",
        },
    )
    assert config.gateway.outbox_max_mb == 20
    assert config.tcp is not None
    assert config.tcp.idle_timeout_s == 2.5
    assert config.store_url() == "sqlite:////tmp/x.db"


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ("[gateway]\ncolour = 1\n", {}, "gateway.colour"),
        ("[gatway]\n", {}, "gatway"),
        ("[gateway]\noutbox_max_mb = 'big'\n", {}, "gateway.outbox_max_mb"),
        ("[gateway]\n", {"SMILEY_GATEWAY_OUTBOX_MAX_MB": "lots"}, "gateway.outbox_max_mb"),
        ("[gateway]\noutbox_max_mb = 0\n", {}, "gateway.outbox_max_mb"),
        ("[tcp]\nlisten = 'nowhere'\n", {}, "tcp.listen"),
        ("[tcp]\nlisten = '1.2.3.4:99999'\n", {}, "tcp.listen"),
        ("[tcp]\ntls_cert = 'missing.pem'\ntls_key = 'missing.key'\n", {}, "tcp.tls_cert"),
        ("[tcp]\ntls_cert = 'missing.pem'\n", {}, "tcp.tls_key"),
        ("[api]\ntls_cert = 'missing.pem'\ntls_key = 'missing.key'\n", {}, "api.tls_cert"),
        ("[api]\ntls_key = 'missing.key'\n", {}, "api.tls_key"),
        ("[api]\nmax_connections = 0\n", {}, "api.max_connections"),
        ("[api]\nrefresh_s = 301\n", {}, "api.refresh_s"),
        ("[api]\nrefresh_s = -1\n", {}, "api.refresh_s"),
        ("[store]\nurl = 'mysql://x'\n", {}, "store.url"),
        ("[gateway]\nregistry = 'nope.toml'\n", {}, "gateway.registry"),
        ("[gateway]\nlog_format = 'xml'\n", {}, "gateway.log_format"),
        ("[health]\nconsole_user = 'ops'\n", {}, "health.console_password_file"),
        ("[health]\nconsole_password_file = 'pw'\n", {}, "health.console_password_file"),
        (
            "[health]\nconsole_user = 'ops'\nconsole_password_file = 'missing'\n",
            {},
            "health.console_password_file",
        ),
        ("[health]\nhistory_interval_s = 0\n", {}, "health.history_interval_s"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[gateway\n"), env={})
