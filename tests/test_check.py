"""``smiley-gateway check``: each class of bad configuration, named line by line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware_sim.harness import free_port
from tests.support import REGISTRY_TOML

SCRIPT = str(Path(sys.executable).parent / "smiley-gateway")

GOOD_TERMINAL = """
[[terminal]]
id = 1003
key = "00112233445566778899aabbccddeeff"
location = 11
survey = 100
"""


def run_check(
    directory: Path, config: str, registry: str = REGISTRY_TOML, *args: str
) -> tuple[int, list[str]]:
    (directory / "terminals.toml").write_text(registry, encoding="utf-8")
    path = directory / "gateway.toml"
    path.write_text(config, encoding="utf-8")
    result = subprocess.run(
        [SCRIPT, "check", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    return result.returncode, result.stdout.splitlines()


def base(extra: str = "", gateway: str = "") -> str:
    return f"""
[gateway]
data_dir = "var"
registry = "terminals.toml"
{gateway}
[tcp]
listen = "127.0.0.1:{free_port()}"
[store]
url = "sqlite:///var/central.db"
{extra}
"""


def test_a_good_configuration_passes(tmp_path: Path) -> None:
    code, lines = run_check(tmp_path, base(), REGISTRY_TOML + GOOD_TERMINAL)
    assert code == 0, lines
    assert lines[-1].endswith("is valid")
    assert any("3 terminals" in line for line in lines)


def test_unknown_sections_and_keys(tmp_path: Path) -> None:
    code, lines = run_check(tmp_path, base("[tcpp]\nlisten = 1\n", gateway="outbx_max_mb = 5"))
    assert code == 1
    config = str(tmp_path / "gateway.toml")
    assert (
        f"{config}: [tcpp]: unknown section; expected one of"
        " ['api', 'gateway', 'health', 'mqtt', 'sms', 'store', 'tcp', 'web']"
    ) in lines
    assert any(line.startswith(f"{config}: gateway.outbx_max_mb: unknown key") for line in lines)
    assert len(lines) == 2, lines


def test_every_bad_value_is_reported_not_just_the_first(tmp_path: Path) -> None:
    config = base(
        '[health]\nlisten = "127.0.0.1:9"\nlow_battery_pct = 150\n',
        gateway='stats_interval_s = "often"\nlog_level = "loud"\noutbox_max_mb = 0',
    ).replace("[tcp]\n", "[tcp]\npipeline_depth = 0\nidle_timeout_s = -1\n")
    code, lines = run_check(tmp_path, config)
    assert code == 1
    text = "\n".join(lines)
    assert "gateway.stats_interval_s: expected float, got 'often'" in text
    assert "gateway.log_level: expected one of" in text
    assert "gateway.outbox_max_mb: must be positive" in text
    assert "tcp.pipeline_depth: must be positive" in text
    assert "tcp.idle_timeout_s: must be positive" in text
    assert "health.low_battery_pct: must be 0..100" in text


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("x", "tcp.listen: expected host:port, got 'x'"),
        ("127.0.0.1:99999", "tcp.listen: expected host:port, got '127.0.0.1:99999'"),
        ("192.0.2.1:7700", "tcp.listen: 192.0.2.1 is not an address of this machine"),
    ],
)
def test_bad_addresses(tmp_path: Path, listen: str, message: str) -> None:
    config = base().replace('listen = "127.0.0.1:', f'listen = "{listen}"\n# "')
    code, lines = run_check(tmp_path, config)
    assert code == 1
    assert lines == [f"{tmp_path / 'gateway.toml'}: {message}"]


def test_bad_address_from_the_environment_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "terminals.toml").write_text(REGISTRY_TOML, encoding="utf-8")
    (tmp_path / "gateway.toml").write_text(base(), encoding="utf-8")
    result = subprocess.run(
        [SCRIPT, "check", "--config", str(tmp_path / "gateway.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SMILEY_TCP_LISTEN": "nowhere"},
    )
    assert result.returncode == 1
    assert "tcp.listen: expected host:port, got 'nowhere'" in result.stdout


def test_registry_problems_each_on_its_line(tmp_path: Path) -> None:
    registry = (
        REGISTRY_TOML
        + GOOD_TERMINAL  # 1003
        + GOOD_TERMINAL.replace("00112233", "99112233")  # 1003 again
        + """
[[terminal]]
id = 1004
key = "0011"
location = 11
survey = 100
[[terminal]]
id = 1005
key = "not hex at all, not hex at all!!"
location = 11
survey = 100
[[terminal]]
id = 1006
key = "a0112233445566778899aabbccddeeff"
location = 99
survey = 100
[[terminal]]
id = 1007
key = "b0112233445566778899aabbccddeeff"
location = 11
survey = 555
[[terminal]]
id = 1008
key = "c0112233445566778899aabbccddeeff"
location = 10
survey = 100
[[location]]
id = 12
company = "nobody"
name = "Orphan"
timezone = "Europe/Helsinki"
"""
    )
    code, lines = run_check(tmp_path, base(), registry)
    assert code == 1
    reg = str(tmp_path / "terminals.toml")
    assert lines == [
        f"{reg}: terminal 1003: duplicate terminal id (2 entries)",
        f"{reg}: terminal 1004: key must be 16 bytes, got 2",
        f"{reg}: terminal 1005: key is not hex",
        f"{reg}: location 12: company 'nobody' does not exist",
        f"{reg}: terminal 1006: location 99 does not exist",
        f"{reg}: terminal 1007: survey 555 does not exist",
        f"{reg}: terminal 1008: location 10 is a group (it has no timezone)",
    ]


def test_unreachable_store_broker_and_missing_serial_port(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    config = base(
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{closed}"\n[sms]\nport = "/dev/ttySMILEY-NONE"\n'
    ).replace(
        'url = "sqlite:///var/central.db"', f'url = "postgresql://gw:secret@127.0.0.1:{closed}/x"'
    )
    code, lines = run_check(tmp_path, config)
    assert code == 1
    config_path = str(tmp_path / "gateway.toml")
    store, broker, serial = lines
    assert store.startswith(
        f"{config_path}: store.url: cannot reach postgresql://gw:***@127.0.0.1:{closed}/x:"
    )
    assert "secret" not in store
    assert broker.startswith(f"{config_path}: mqtt.url: cannot reach mqtt://127.0.0.1:{closed}:")
    assert serial == (
        f"{config_path}: sms.port: serial device /dev/ttySMILEY-NONE does not exist:"
        " is the modem plugged in and named by deploy/99-smiley-modem.rules?"
    )
    # --offline skips what has to be reached and keeps the rest.
    offline, lines = run_check(tmp_path, config, REGISTRY_TOML, "--offline")
    assert offline == 0, lines


def test_broker_and_store_that_answer_pass(tmp_path: Path) -> None:
    """The shared Mosquitto on 1883 (only connected to, with its own client id)."""
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 1883)) != 0:
            pytest.skip("no broker on 127.0.0.1:1883")
    code, lines = run_check(tmp_path, base('[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'))
    assert code == 0, lines
    assert "ok: broker mqtt://127.0.0.1:1883: reachable" in lines


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    code, lines = run_check(tmp_path, "[gateway\n")
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'gateway.toml'}: file: not valid TOML")
