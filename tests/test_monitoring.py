"""deploy/grafana and deploy/prometheus against a real gateway and a real promtool.

Every metric the dashboard and the alert rules name is in a gateway's
``/metrics`` after a run (one terminal heard from), whichever sections are configured (a
rename in gateway/ops/metrics.py fails here); the rules pass ``promtool check
rules`` and their unit tests (alerts_test.yml) pass ``promtool test rules``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from firmware_sim.harness import free_port
from firmware_sim.modem_profiles import ModemProfile
from firmware_sim.modem_server import SocketModemServer
from protocols.frames import Presses, PressRecord
from tests.conftest import GatewayHarness
from tests.test_mqtt import mqtt_section
from tests.test_sms import sms_config
from tests.test_tcp import hello

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "smiley-gateway.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
PROMTOOL = "/usr/bin/promtool"
METRIC = re.compile(r"\bsmiley_[a-z0-9_]+\b")


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r for group in rules["groups"] for r in group["rules"]]


def named_metrics() -> set[str]:
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    return {name for expr in exprs for name in METRIC.findall(expr)}


async def scraped_names(extra: str, directory: Path) -> set[str]:
    port = free_port()
    harness = GatewayHarness(directory, extra=f'[health]\nlisten = "127.0.0.1:{port}"\n' + extra)
    await harness.start()
    try:
        t, _ = await hello(harness)  # a run: one terminal heard from, one press taken
        now = int(time.time())
        await t.send_frame(Presses(1001, now, 0, 0, (PressRecord(0, now - 1, 2, 0),)))
        await t.receive()
        await t.close()
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await harness.stop()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_files_name_the_metrics_the_gateway_has() -> None:
    names = named_metrics()
    # The parse finds what the files are about (a broken regex would find nothing).
    assert {
        "smiley_presses_total",
        "smiley_naks_total",
        "smiley_quarantined_total",
        "smiley_outbox_depth",
        "smiley_forward_lag_seconds",
        "smiley_modem_signal_dbm",
        "smiley_modem_registered",
        "smiley_terminals_silent",
        "smiley_terminal_last_seen_timestamp_seconds",
    } <= names


@pytest.mark.parametrize("sections", ["tcp", "tcp+mqtt", "tcp+sms"])
async def test_every_metric_named_is_exposed_from_the_start(tmp_path: Path, sections: str) -> None:
    names = named_metrics()
    if sections == "tcp+sms":
        async with SocketModemServer(ModemProfile.preset("generic")) as modem:
            exposed = await scraped_names(sms_config(modem.url), tmp_path)
    elif sections == "tcp+mqtt":  # a broker that is not there: MQTT configured and idle
        exposed = await scraped_names(mqtt_section(free_port(), "gw-monitoring"), tmp_path)
    else:
        exposed = await scraped_names("", tmp_path)
    missing = names - exposed
    assert not missing, f"named in deploy/ but not in /metrics with {sections}: {sorted(missing)}"


def test_every_alert_says_what_to_do_and_the_dashboard_serves_a_fleet() -> None:
    for rule in alert_rules():
        assert rule["annotations"].get("action", "").strip(), rule["alert"]
        assert rule["annotations"].get("summary", "").strip(), rule["alert"]
        assert METRIC.search(rule["expr"]) or "up{" in rule["expr"], rule["alert"]
    alerts = {r["alert"] for r in alert_rules()}
    assert {
        "SmileyTerminalSilent",
        "SmileyOutboxGrowing",
        "SmileyStoreUnreachable",
        "SmileyModemNotRegistered",
        "SmileyQuarantineRateHigh",
        "SmileyGatewayDown",
    } <= alerts
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"job", "instance"} <= variables
    for expr in dashboard_exprs():  # every query is narrowed to the chosen job and gateways
        for selector in re.findall(r"smiley_[a-z0-9_]+(\{[^}]*\})?", expr):
            assert "$job" in selector, expr
            assert "$instance" in selector, expr


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERTS.parent,
    )


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    tested = promtool("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
