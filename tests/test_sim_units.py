"""firmware_sim without sockets: terminal model, state file, registry, patterns, faults."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from firmware_sim import (
    POWER_ON_TIME,
    BackoffOptions,
    Child,
    Fault,
    FaultOptions,
    LunchQueue,
    PressBudget,
    RegistryError,
    ScheduledFault,
    StateError,
    Steady,
    Terminal,
    load_registry,
)
from firmware_sim.backoff import Backoff
from firmware_sim.faults import FaultPlanner
from firmware_sim.state import StateStore
from protocols.constants import FrameType

KEY = bytes(range(16))


class FakeTime:
    def __init__(self, now: float = 1_767_225_600.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- terminal model


def test_a_press_is_stamped_by_the_terminal_clock_and_kept_until_acked() -> None:
    clock = FakeTime()
    terminal = Terminal(1001, KEY, real_time=clock, clock_offset=-3.0)
    first = terminal.press(4, 2)
    clock.now += 10
    second = terminal.press(1)
    assert (first.seq, first.ts, first.true_time) == (0, 1_767_225_597, 1_767_225_600.25)
    assert (second.seq, second.ts) == (1, 1_767_225_607)
    assert list(terminal.pending) == [0, 1]
    assert terminal.acknowledge(0, 0) == [first]
    assert terminal.acknowledge(0, 1) == [second]
    assert terminal.pending == {}
    assert terminal.next_seq == 2


def test_power_loss_resets_the_clock_and_keeps_records_and_seq() -> None:
    clock = FakeTime()
    terminal = Terminal(1001, KEY, real_time=clock)
    before = terminal.press(3)
    clock.now += 100
    terminal.power_loss()
    clock.now += 5
    after = terminal.press(2)
    assert terminal.boot_count == 1
    assert terminal.uptime() == 5
    assert not terminal.clock.synced
    assert after.unsynced
    assert after.ts == POWER_ON_TIME + 5
    assert after.seq == before.seq + 1
    assert list(terminal.pending) == [0, 1]
    terminal.clock.set(1_800_000_000)
    assert terminal.clock.synced
    assert terminal.clock.now() == 1_800_000_000
    # The lost clock still reads on, for the sent_at of frames of its records.
    clock.now += 7
    assert terminal.clock.read(after.clock_offset) == POWER_ON_TIME + 12


def test_batches_are_contiguous_and_never_mix_clocks() -> None:
    clock = FakeTime()
    terminal = Terminal(1001, KEY, real_time=clock)
    for _ in range(3):
        terminal.press(1)
    terminal.power_loss()
    for _ in range(2):
        terminal.press(2)
    clock.now += 30
    terminal.power_loss()  # a second lost clock, later: another group
    terminal.press(3)
    terminal.clock.set(1_800_000_000)
    for _ in range(4):
        terminal.press(4)
    batches = []
    cursor = 0
    while batch := terminal.next_batch(cursor, 2**32, 3):
        batches.append([p.seq for p in batch])
        cursor = batch[-1].seq + 1
    assert batches == [[0, 1, 2], [3, 4], [5], [6, 7, 8], [9]]
    terminal.acknowledge(7, 7)
    assert [p.seq for p in terminal.next_batch(6, 2**32, 50)] == [6]
    assert [p.seq for p in terminal.next_batch(7, 2**32, 50)] == [8, 9]
    assert [p.seq for p in terminal.next_batch(0, 1, 50)] == [0, 1]


def test_a_terminal_needs_a_16_byte_key_and_byte_sized_presses() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Terminal(1, b"short")
    terminal = Terminal(1, KEY)
    assert terminal.press(9, 200).button == 9  # sent as is; the gateway keeps it uncounted
    with pytest.raises(ValueError, match="fit in a byte"):
        terminal.press(1, 256)
    assert terminal.next_seq == 1


# ---------------------------------------------------------------- state file


def _terminal_from(store: StateStore, terminal_id: int, clock: FakeTime) -> Terminal:
    saved = store.load().get(terminal_id)
    if saved is None:
        return Terminal(terminal_id, KEY, real_time=clock)
    return Terminal(
        terminal_id,
        KEY,
        real_time=clock,
        next_seq=saved.next_seq,
        boot_count=saved.boot_count,
        clock_offset=saved.clock_offset,
        clock_synced=saved.clock_synced,
        pending=saved.pending,
    )


def test_a_clean_save_resumes_at_the_exact_seq_with_pending_records(tmp_path: Path) -> None:
    clock = FakeTime()
    path = tmp_path / "fleet.json"
    store = StateStore(path, seq_block=100)
    terminal = _terminal_from(store, 1001, clock)
    store.attach([terminal])
    store.reserve_all()
    for _ in range(5):
        terminal.press(2)
    terminal.acknowledge(0, 2)
    terminal.power_loss()
    store.write(*store.snapshot(clean=True))

    again = StateStore(path, seq_block=100)
    restored = _terminal_from(again, 1001, clock)
    assert restored.next_seq == 5
    assert restored.boot_count == 1
    assert not restored.clock.synced
    assert list(restored.pending.values()) == list(terminal.pending.values())
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unclean_state_file_never_lets_a_seq_be_used_twice(tmp_path: Path) -> None:
    clock = FakeTime()
    path = tmp_path / "fleet.json"
    store = StateStore(path, seq_block=10)
    terminal = _terminal_from(store, 1001, clock)
    store.attach([terminal])
    store.reserve_all()
    writes = []
    for _ in range(25):  # crosses two reservations: each one is saved at once
        terminal.press(1)
        writes.append(json.loads(path.read_text())["terminals"]["1001"]["seq_reserved"])
    assert sorted(set(writes)) == [10, 20, 30]
    # The simulator dies here, without a clean save: resume after the reservation.
    assert _terminal_from(StateStore(path), 1001, clock).next_seq == 30


def test_the_state_file_keeps_terminals_of_other_runs(tmp_path: Path) -> None:
    clock = FakeTime()
    path = tmp_path / "fleet.json"
    first = StateStore(path)
    first.attach([Terminal(1, KEY, real_time=clock, next_seq=7)])
    first.write(*first.snapshot(clean=True))
    second = StateStore(path)
    second.load()
    second.attach([Terminal(2, KEY, real_time=clock, next_seq=3)])
    second.write(*second.snapshot(clean=True))
    saved = StateStore(path).load()
    assert {tid: s.next_seq for tid, s in saved.items()} == {1: 7, 2: 3}


def test_an_older_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    store = StateStore(path)
    terminal = Terminal(1, KEY, next_seq=1)
    store.attach([terminal])
    old = store.snapshot()
    terminal.next_seq = 2
    store.write(*store.snapshot(clean=True))
    store.write(*old)
    assert StateStore(path).load()[1].next_seq == 2


def test_a_broken_state_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text('{"format": 1, "terminals": {"1": {"next_seq": 1}}}')
    with pytest.raises(StateError):
        StateStore(path).load()
    path.write_text("not json")
    with pytest.raises(StateError):
        StateStore(path).load()


# ---------------------------------------------------------------- registry


def test_the_registry_gives_ids_and_keys_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "terminals.toml"
    path.write_text(
        '[[company]]\nid = "acme"\n'
        '[[terminal]]\nid = 1002\nkey = "f0e1d2c3b4a5968778695a4b3c2d1e0f"\nlocation = 11\n'
        '[[terminal]]\nid = "0x3e9"\nkey = "000102030405060708090A0B0C0D0E0F"\n'
    )
    assert load_registry(path) == {
        1002: bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f"),
        1001: bytes(range(16)),
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('id = 1\nkey = "00"', "1 bytes"),
        ('id = 1\nkey = "zz"', "not hex"),
        ('key = "000102030405060708090a0b0c0d0e0f"', "id is missing"),
        ('id = -1\nkey = "000102030405060708090a0b0c0d0e0f"', "32 bits"),
        ('id = "x1"\nkey = "000102030405060708090a0b0c0d0e0f"', "not a number"),
    ],
)
def test_bad_registry_entries_are_refused(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "terminals.toml"
    path.write_text(f"[[terminal]]\n{entry}\n")
    with pytest.raises(RegistryError, match=message):
        load_registry(path)


def test_a_missing_registry_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError):
        load_registry(tmp_path / "nope.toml")


# ---------------------------------------------------------------- patterns


def _gaps(pattern: Steady | LunchQueue | Child, seed: int, n: int) -> list[float]:
    return list(itertools.islice(pattern.delays(random.Random(seed)), n))


def test_patterns_repeat_with_the_seed() -> None:
    for pattern in (Steady(5), LunchQueue(rate=0.1, rush_rate=3, period=60, rush=10), Child()):
        assert _gaps(pattern, 1, 200) == _gaps(pattern, 1, 200)
        assert _gaps(pattern, 1, 200) != _gaps(pattern, 2, 200)
        assert all(gap >= 0 for gap in _gaps(pattern, 3, 500))


def test_steady_is_poisson_at_its_rate() -> None:
    gaps = _gaps(Steady(4), 5, 20_000)
    assert sum(gaps) / len(gaps) == pytest.approx(0.25, rel=0.05)
    assert _gaps(Steady(0), 5, 3) == [0.0, 0.0, 0.0]


def test_a_lunch_queue_presses_mostly_during_the_rush() -> None:
    pattern = LunchQueue(rate=0.01, rush_rate=5, period=100, rush=10)
    times = list(itertools.accumulate(_gaps(pattern, 9, 5_000)))
    in_rush = sum(t % 100 < 10 for t in times)
    assert in_rush / len(times) > 0.95
    assert LunchQueue(rate=0, rush_rate=1, period=10, rush=1).rate == 0


def test_a_child_presses_ten_times_a_second() -> None:
    gaps = _gaps(Child(rate=10, presses=20, pause=30), 4, 40)
    assert gaps[1:20] == [0.1] * 19
    assert gaps[21:40] == [0.1] * 19


def test_the_budget_stops_at_its_total() -> None:
    budget = PressBudget(2)
    assert [budget.take() for _ in range(3)] == [True, True, False]
    assert budget.spent
    unlimited = PressBudget(None)
    assert all(unlimited.take() for _ in range(1000))


# ---------------------------------------------------------------- faults and backoff


def test_fault_options_parse_the_cli_form() -> None:
    options = FaultOptions.parse("split=0.1, garbage=0.01,crc=0.05,drop=0.02,power=0.001")
    assert options == FaultOptions(
        split_write=0.1, garbage=0.01, corrupt_crc=0.05, drop=0.02, power_loss=0.001
    )
    with pytest.raises(ValueError, match="unknown fault"):
        FaultOptions.parse("meteor=1")
    with pytest.raises(ValueError, match="probability"):
        FaultOptions.parse("drop=2")
    assert ScheduledFault.parse("2.5:power_loss:1001") == ScheduledFault(
        2.5, Fault.POWER_LOSS, 1001
    )
    with pytest.raises(ValueError, match="unknown fault"):
        ScheduledFault.parse("1:meteor")


def test_injected_faults_wait_for_a_frame_they_fit() -> None:
    planner = FaultPlanner(FaultOptions(), random.Random(0))
    planner.inject(Fault.CORRUPT_CRC)
    planner.inject(Fault.GARBAGE)
    assert planner.for_frame(FrameType.HELLO) == frozenset()
    assert planner.for_frame(FrameType.HEARTBEAT) == {Fault.GARBAGE}
    assert planner.for_frame(FrameType.PRESSES) == {Fault.CORRUPT_CRC}
    assert planner.for_frame(FrameType.PRESSES) == frozenset()
    garbage = planner.garbage()
    assert 1 <= len(garbage) <= 16
    assert garbage[0] != ord("S")
    with pytest.raises(ValueError, match="not a frame fault"):
        planner.inject(Fault.POWER_LOSS)


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(BackoffOptions(initial=1, maximum=8, jitter=0.5), random.Random(0))
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, cap in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert cap / 2 <= delay <= cap
    backoff.reset()
    assert backoff.next_delay() <= 1
