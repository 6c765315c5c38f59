"""Web smileys and survey follow-ups in the registry, `check`, `terminals import` and [web]."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.errors import ConfigError, RegistryError
from gateway.registry.config import load_config
from gateway.registry.terminals import parse_registry, registry_tables
from tests.web_support import WEB_REGISTRY_TOML

SCRIPT = str(Path(sys.executable).parent / "smiley-gateway")


def test_web_smileys_and_followups_load_and_round_trip() -> None:
    registry = parse_registry(tomllib.loads(WEB_REGISTRY_TOML))
    web = registry.web_smiley("helsinki-exit")
    assert web is not None
    assert (web.id, web.location, web.survey, web.name) == (5001, 11, 100, "Receipt QR code")
    assert registry.web_smiley("nowhere") is None
    assert str(registry.zone_for(5001)) == "Europe/Helsinki"
    survey = registry.surveys[100]
    assert survey.followup_question == "What could we do better?"
    assert survey.followup_options == ("Queue", "Staff", "Cleanliness", "Prices")
    assert survey.followup_after == (1, 2)
    assert survey.asks_followup(2)
    assert not survey.asks_followup(3)
    assert parse_registry(registry_tables(registry)) == registry


def mutate(old: str, new: str) -> str:
    assert old in WEB_REGISTRY_TOML
    return WEB_REGISTRY_TOML.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (mutate('slug = "helsinki-counter"', 'slug = "helsinki-exit"'), "is taken"),
        (mutate("id = 5002", "id = 1001"), "also a terminal's"),
        (mutate('survey = 100\nname = "Counter', 'survey = 7\nname = "Counter'), "survey 7"),
        (
            mutate(
                'location = 11\nsurvey = 100\nname = "Counter',
                'location = 10\nsurvey = 100\nname = "Counter',
            ),
            "not an experience point",
        ),
        (mutate('slug = "helsinki-exit"', 'slug = "Helsinki Exit"'), "slug must be"),
        (mutate('slug = "helsinki-exit"', 'slug = "helsinki-exit-"'), "slug must be"),
        (mutate("followup_after = [1, 2]", "followup_after = [1, 5]"), "button 5 is not 1..4"),
        (mutate('"Queue", ', '"Queue", ' + '"x", ' * 13), "at most 16"),
        (mutate('followup_question = "What could we do better?"\n', ""), "go together"),
        (mutate('name = "Receipt QR code"', 'name = "Receipt"\ncolour = 1'), "unknown field"),
    ],
)
def test_bad_web_smileys_are_refused(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(tomllib.loads(text))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_check_names_each_web_smiley_problem(tmp_path: Path) -> None:
    registry = tmp_path / "terminals.toml"
    registry.write_text(
        WEB_REGISTRY_TOML
        + '[[web_smiley]]\nid = 1001\nslug = "helsinki-exit"\nlocation = 99\nsurvey = 555\n',
        encoding="utf-8",
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway]\nregistry = "terminals.toml"\n[store]\nurl = "sqlite:///central.db"\n'
        '[web]\nlisten = "127.0.0.1:0"\n',
        encoding="utf-8",
    )
    result = run("check", "--config", config)
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if "web_smiley" in line]
    assert lines == [
        f"{registry}: web_smiley 5001: slug 'helsinki-exit' is taken twice",
        f"{registry}: web_smiley 1001: location 99 does not exist",
        f"{registry}: web_smiley 1001: survey 555 does not exist",
        f"{registry}: web_smiley 1001: id is also a terminal's (one id space)",
        f"{registry}: web_smiley 1001: slug 'helsinki-exit' is taken twice",
    ]


def test_terminals_import_refuses_a_web_smiley_with_a_terminal_id(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[store]\nurl = "sqlite:///central.db"\n', encoding="utf-8")
    good = tmp_path / "good.toml"
    good.write_text(WEB_REGISTRY_TOML, encoding="utf-8")
    assert run("terminals", "import", good, "--config", config).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(mutate("id = 5002", "id = 1002"), encoding="utf-8")
    result = run("terminals", "import", bad, "--config", config)
    assert result.returncode == 2
    assert "web_smiley 1002: id is also a terminal's" in result.stderr


def test_web_section(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[web]\nlisten = "0.0.0.0:8443"\n', encoding="utf-8")
    web = load_config(path, env={}).web
    assert web is not None
    assert (web.listen, web.rate_limit, web.tls_cert) == ("0.0.0.0:8443", "60/minute", None)
    assert load_config(tmp_path / "gateway.toml", env={}).tcp is None
    for text, key in (
        ('[web]\nrate_limit = "lots"\n', "web.rate_limit"),
        ('[web]\nlisten = "nowhere"\n', "web.listen"),
        ('[web]\ntls_cert = "cert.pem"\n', "web.tls_key"),
        ('[web]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n', "web.tls_cert"),
    ):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        assert caught.value.key == key
