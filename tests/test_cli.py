"""The operator's commands, run as the installed ``smiley-gateway`` script."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from gateway.ops.export import PRESS_FIELDS, REJECT_FIELDS
from tests.conftest import GatewayHarness
from tests.support import VECTOR_HEX
from tests.test_tcp import hello

SCRIPT = str(Path(sys.executable).parent / "smiley-gateway")


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_terminals_import_is_idempotent(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[store]\nurl = "sqlite:///central.db"\n', encoding="utf-8")
    sample = Path(__file__).resolve().parents[1] / "deploy" / "terminals.example.toml"
    first = cli("terminals", "import", sample, "--config", config)
    assert first.returncode == 0, first.stderr
    assert "50 terminals" in first.stdout
    assert "55 added, 0 changed, 0 unchanged" in first.stdout
    second = cli("terminals", "import", sample, "--config", config)
    assert second.returncode == 0, second.stderr
    assert "0 added, 0 changed, 55 unchanged" in second.stdout
    changed = tmp_path / "changed.toml"
    changed.write_text(
        sample.read_text(encoding="utf-8").replace('name = "Entrance"', 'name = "Front door"'),
        encoding="utf-8",
    )
    third = cli("terminals", "import", changed, "--config", config)
    assert "0 added, 1 changed, 54 unchanged" in third.stdout


def test_bad_registry_and_bad_config_fail_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[terminal]]\nid = 1\n", encoding="utf-8")
    result = cli("terminals", "import", bad)
    assert result.returncode == 2
    assert "missing field 'key'" in result.stderr
    config = tmp_path / "gateway.toml"
    config.write_text("[tcp]\nlisten = 'x'\n", encoding="utf-8")
    result = cli("run", "--config", config)
    assert result.returncode == 2
    assert "tcp.listen: expected host:port" in result.stderr


async def test_export_ndjson_csv_and_rejected(harness: GatewayHarness) -> None:
    harness.now = 1767225663.0
    t, _ = await hello(harness)
    await t.send(VECTOR_HEX["presses"])
    await t.receive()
    await t.send(VECTOR_HEX["presses_bad_records"])
    await t.receive()
    await t.close()
    await harness.forwarded()
    config = harness.config_path

    ndjson = cli("export", "--config", config, "--format", "ndjson")
    assert ndjson.returncode == 0, ndjson.stderr
    rows = [json.loads(line) for line in ndjson.stdout.splitlines()]
    assert [tuple(r) for r in rows] == [PRESS_FIELDS] * 4
    assert rows[0] == {
        "terminal_id": 1001,
        "seq": 120,
        "occurred_at": "2026-01-01T00:00:05Z",
        "local_time": "2026-01-01T02:00:05+02:00",
        "precision": "second",
        "button": 4,
        "followup": 0,
        "count": 1,
        "transport": "tcp",
        "clock_corrected": False,
        "received_at": "2026-01-01T00:01:03Z",
        "misuse": False,
        "ui": "",  # a terminal's press (a web smiley's says how it came)
    }

    window = cli(
        "export", "--config", config, "--since", "2026-01-01T00:00:09Z",
        "--until", "2026-01-01T00:01:01Z",
    )  # fmt: skip
    assert [json.loads(line)["seq"] for line in window.stdout.splitlines()] == [121]

    out = harness.directory / "presses.csv"
    result = cli("export", "--config", config, "--format", "csv", "--output", out)
    assert result.returncode == 0, result.stderr
    table = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [int(r["seq"]) for r in table] == [120, 121, 122, 132]
    assert table[0]["clock_corrected"] == "false"

    rejected = cli("export", "--config", config, "--rejected", "--format", "csv")
    quarantine = list(csv.DictReader(io.StringIO(rejected.stdout)))
    assert tuple(quarantine[0]) == REJECT_FIELDS
    assert sorted(int(r["seq"]) for r in quarantine) == [130, 131]
    assert {r["reason"] for r in quarantine} == {"RECORD_INVALID"}


def test_mqtt_passwords_for_the_registry(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[1] / "deploy" / "terminals.example.toml"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nregistry = "{sample}"\n[mqtt]\npassword = "gateway-secret-0123456789"\n',
        encoding="utf-8",
    )
    out = tmp_path / "smiley.passwd"
    result = cli("mqtt", "passwords", "--config", config, "--output", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 51 users to {out}"
    users = [line.split(":", 1)[0] for line in out.read_text().splitlines()]
    assert "smiley-gateway" in users
    assert "1001" in users
    assert "gateway-secret" not in out.read_text()  # hashed by mosquitto_passwd
    config.write_text(f'[gateway]\nregistry = "{sample}"\n[mqtt]\n', encoding="utf-8")
    missing = cli("mqtt", "passwords", "--config", config, "--output", out)
    assert missing.returncode == 2
    assert "mqtt.password" in missing.stderr
