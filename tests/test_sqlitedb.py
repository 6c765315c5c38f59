"""The one PRAGMA user_version migration runner (gateway/sqlitedb.py), blocking and async."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from gateway.errors import SchemaError
from gateway.sqlitedb import migrate, migrate_sync, statements

MIGRATIONS = (
    "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1)",
    "CREATE TABLE b (y INTEGER);"
    " CREATE TRIGGER a_copied AFTER INSERT ON a BEGIN INSERT INTO b VALUES (NEW.x); END;",
    "ALTER TABLE a ADD COLUMN z INTEGER NOT NULL DEFAULT 7",
)


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def version(path: Path) -> int:
    db = connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_a_trigger_body_stays_one_statement() -> None:
    assert len(statements(MIGRATIONS[1])) == 2
    assert statements("  ;\n;") == []


def test_a_new_database_gets_every_migration_in_order(tmp_path: Path) -> None:
    db = connect(tmp_path / "x.db")
    try:
        assert migrate_sync(db, MIGRATIONS, "test", when_new=["PRAGMA page_size=8192"]) == 3
        db.execute("INSERT INTO a (x) VALUES (2)")  # the trigger of migration 2 copies it
        assert db.execute("SELECT x, z FROM a ORDER BY x").fetchall() == [(1, 7), (2, 7)]
        assert db.execute("SELECT y FROM b").fetchall() == [(2,)]
        assert db.execute("PRAGMA page_size").fetchone()[0] == 8192
        assert not db.in_transaction
    finally:
        db.close()
    assert version(tmp_path / "x.db") == 3


def test_an_older_database_gets_only_the_migrations_it_lacks(tmp_path: Path) -> None:
    db = connect(tmp_path / "x.db")
    try:
        migrate_sync(db, MIGRATIONS[:1], "test")
        db.execute("INSERT INTO a VALUES (5)")
        assert migrate_sync(db, MIGRATIONS, "test") == 3
        assert db.execute("SELECT x, z FROM a ORDER BY x").fetchall() == [(1, 7), (5, 7)]
        assert migrate_sync(db, MIGRATIONS, "test") == 3  # up to date: nothing runs
        assert db.execute("SELECT count(*) FROM a").fetchone()[0] == 2
    finally:
        db.close()


def test_a_failing_migration_rolls_back_only_itself(tmp_path: Path) -> None:
    broken = (*MIGRATIONS[:2], "ALTER TABLE a ADD COLUMN z INTEGER; CREATE TABLE a (dup)")
    db = connect(tmp_path / "x.db")
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate_sync(db, broken, "test")
        assert not db.in_transaction
        columns = [r[1] for r in db.execute("PRAGMA table_info(a)")]
        assert columns == ["x"]  # migration 3's first statement was rolled back with it
    finally:
        db.close()
    assert version(tmp_path / "x.db") == 2  # each migration committed on its own


def test_a_newer_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = connect(tmp_path / "x.db")
    try:
        db.execute("PRAGMA user_version=9")
        with pytest.raises(SchemaError, match=r"test schema version 9 is newer .* \(3\)"):
            migrate_sync(db, MIGRATIONS, "test")
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        db.close()


async def test_the_async_runner_does_the_same(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, MIGRATIONS[:2], "test") == 2
        assert await migrate(db, MIGRATIONS, "test") == 3
        async with db.execute("SELECT x, z FROM a") as cursor:
            assert list(await cursor.fetchall()) == [(1, 7)]
        await db.execute("PRAGMA user_version=4")
        with pytest.raises(SchemaError, match="schema version 4"):
            await migrate(db, MIGRATIONS, "test")
        assert not db.in_transaction


async def test_two_connections_migrating_together_apply_each_migration_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.db"
    async with (
        aiosqlite.connect(path, isolation_level=None) as one,
        aiosqlite.connect(path, isolation_level=None) as two,
    ):
        for db in (one, two):
            await db.execute("PRAGMA busy_timeout=10000")
        plan_one = migrate(one, MIGRATIONS, "test")
        plan_two = migrate(two, MIGRATIONS, "test")
        assert list(await asyncio.gather(plan_one, plan_two)) == [3, 3]
        async with one.execute("SELECT count(*) FROM a") as cursor:
            assert (await cursor.fetchone()) == (1,)  # migration 1's INSERT ran once
