"""deploy/: the install script, the systemd unit and the modem's udev rule."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
VENV = Path(sys.executable).parent.parent


def install(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_install_script_help_and_syntax() -> None:
    result = install("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: deploy/install.sh")
    for option in ("--prefix", "--destdir", "--no-start", "--no-venv"):
        assert option in result.stdout
    assert install("--bogus").returncode == 2
    assert subprocess.run(["sh", "-n", str(INSTALL)], check=False).returncode == 0
    if shutil.which("shellcheck"):
        lint = subprocess.run(
            ["shellcheck", str(INSTALL)], capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0, lint.stdout


def test_install_is_idempotent_and_keeps_the_configuration(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = install("--destdir", root, "--no-venv")
    assert first.returncode == 0, first.stderr
    config = root / "etc/smiley-gateway/gateway.toml"
    text = config.read_text(encoding="utf-8")
    assert 'data_dir = "/var/lib/smiley-gateway"' in text
    assert 'url = "sqlite:////var/lib/smiley-gateway/central.db"' in text
    assert 'registry = "terminals.toml"' in text
    assert (root / "etc/smiley-gateway/terminals.toml").is_file()
    assert (root / "etc/udev/rules.d/99-smiley-modem.rules").is_file()
    config.write_text(text + "\n# edited by store IT\n", encoding="utf-8")
    second = install("--destdir", root, "--no-venv")
    assert second.returncode == 0, second.stderr
    assert "kept existing" in second.stdout
    assert config.read_text(encoding="utf-8").endswith("# edited by store IT\n")
    # The installed configuration passes the check the unit runs before each start.
    checked = subprocess.run(
        [str(VENV / "bin/smiley-gateway"), "check", "--offline", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout


def test_unit_has_what_an_unattended_gateway_needs() -> None:
    settings = unit_settings((DEPLOY / "smiley-gateway.service").read_text(encoding="utf-8"))
    expected = {
        "Type": "notify",
        "Restart": "always",
        "StateDirectory": "smiley-gateway",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "SupplementaryGroups": "dialout",
        "NotifyAccess": "main",
        "KillSignal": "SIGTERM",
    }
    for key, value in expected.items():
        assert settings[key] == [value], key
    assert int(settings["WatchdogSec"][0]) > 0
    assert int(settings["TimeoutStopSec"][0]) > 30  # the gateway's own shutdown bound is 30 s
    assert "char-ttyUSB rw" in settings["DeviceAllow"]
    assert settings["Environment"][0] == "SMILEY_GATEWAY_DATA_DIR=/var/lib/smiley-gateway"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_analyze_verify_accepts_the_installed_unit(tmp_path: Path) -> None:
    # systemd-analyze checks that ExecStart exists: install with a prefix whose venv is ours.
    prefix = tmp_path / "opt"
    prefix.mkdir()
    (prefix / "venv").symlink_to(VENV)
    root = tmp_path / "root"
    result = install("--destdir", root, "--prefix", prefix, "--no-venv")
    assert result.returncode == 0, result.stderr
    unit = root / "etc/systemd/system/smiley-gateway.service"
    assert f"ExecStart={prefix}/venv/bin/smiley-gateway run" in unit.read_text(encoding="utf-8")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert verify.returncode == 0, verify.stderr
    assert "smiley-gateway.service" not in verify.stderr, verify.stderr


def test_udev_rule_names_the_modem_for_each_vendor() -> None:
    text = (DEPLOY / "99-smiley-modem.rules").read_text(encoding="utf-8")
    rules = [line for line in text.splitlines() if "SYMLINK" in line]
    vendors = {re.search(r'ENV\{ID_VENDOR_ID\}=="(\w+)"', r)[1] for r in rules}  # type: ignore[index]
    assert vendors == {"2c7c", "1e0e", "12d1"}  # Quectel, SIMCom, Huawei
    for rule in rules:
        assert 'SYMLINK+="smiley-modem"' in rule
        assert 'GROUP="dialout"' in rule
        assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in rule  # ModemManager keeps off the AT port
        for pair in rule.split(", "):
            assert re.fullmatch(r'[A-Z_]+(\{\w+\})?(==|\+=|=|!=)"[^"]*"', pair), pair
    assert 'LABEL="smiley_modem_end"' in text
