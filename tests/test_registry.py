from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry.terminals import load_registry, parse_registry, registry_tables
from gateway.stores.sqlite import SqliteStore
from tests.support import REGISTRY_TOML

REPO = Path(__file__).resolve().parents[1]


def test_issue_example_and_sample_registry_load() -> None:
    registry = parse_registry(tomllib.loads(REGISTRY_TOML))
    assert registry.key_for(1001) == bytes(range(16))
    assert registry.key_for(9999) is None
    assert str(registry.zone_for(1001)) == "Europe/Helsinki"
    assert registry.surveys[100].misuse_interval_s == 5
    assert registry.locations[10].is_experience_point is False
    sample = load_registry(REPO / "deploy" / "terminals.example.toml")
    assert len(sample.terminals) == 50


def mutate(old: str, new: str) -> str:
    assert old in REGISTRY_TOML
    return REGISTRY_TOML.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (mutate('key = "000102030405060708090a0b0c0d0e0f"', 'key = "0001"'), "16 bytes"),
        (mutate('key = "000102030405060708090a0b0c0d0e0f"', 'key = "zz"'), "not hex"),
        (mutate("id = 1002", "id = 1001"), "duplicate terminal id 1001"),
        (mutate("survey = 100\nname", "survey = 101\nname"), "survey 101 does not exist"),
        (
            mutate("location = 11\nsurvey = 100\nname", "location = 10\nsurvey = 100\nname"),
            "is a group",
        ),
        (mutate('timezone = "Europe/Helsinki"', 'timezone = "Mars/Olympus"'), "unknown time zone"),
        (mutate("parent = 10", "parent = 77"), "parent 77 does not exist"),
        (
            mutate('company = "acme"\nname = "Finland"', 'company = "zed"\nname = "Finland"'),
            "company 'zed'",
        ),
        (REGISTRY_TOML + "\n[[gadget]]\nid = 1\n", "unknown table"),
        (mutate('name = "Entrance"', 'name = "Entrance"\ncolour = "red"'), "unknown field"),
        (mutate("misuse_interval_s = 5", 'misuse_interval_s = "5"'), "must be int"),
    ],
)
def test_inconsistent_registry_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(tomllib.loads(text))


def test_location_cycle_is_refused() -> None:
    text = REGISTRY_TOML.replace('name = "Finland"', 'name = "Finland"\nparent = 11', 1)
    with pytest.raises(RegistryError, match="loops"):
        parse_registry(tomllib.loads(text))


def test_registry_tables_read_back_to_the_same_registry() -> None:
    sample = load_registry(REPO / "deploy" / "terminals.example.toml")
    assert parse_registry(registry_tables(sample)) == sample


async def test_sqlite_store_keeps_the_registry_it_imported(tmp_path: Path) -> None:
    sample = load_registry(REPO / "deploy" / "terminals.example.toml")
    store = await SqliteStore.open(tmp_path / "central.db")
    await store.import_registry(sample)
    assert await store.load_registry() == sample
    await store.close()
