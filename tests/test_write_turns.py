"""SQLite's one write lock, shared by the click writer and the gateway's own writes.

Behind a spike the click writer writes batch after batch. A console save or a stored WeCom
callback that waits for the lock must get it before the writer's next transaction, not
whenever SQLite's busy handler happens to try in the moment the lock is free (it failed
after storage.timeout_seconds on one busy CPU). These tests use two stores on one real
file, as the gateway and its writer child have, and a real process for a killed holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from gateway.secretbox import SecretBox
from gateway.store import Event, Merchant, StoreUnavailable
from gateway.store.sqlite import SQLiteStore, _part_rows
from gateway.store.turns import WriteTurns

from .test_store import click, event
from .wait import DEADLINE, until, until_sync


def _turns_file(database: Path) -> Path:
    return database.with_name(database.name + "-turns")


def _someone_waits(path: Path) -> bool:
    """Whether a short write holds its turn (its shared lock on the turns file)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def _two_merchants(store: SQLiteStore) -> tuple[int, int]:
    await store.create_merchant(Merchant("m1", "One"))
    await store.create_merchant(Merchant("m2", "Two"))
    ids = []
    for merchant, code in (("m1", "code0001"), ("m2", "code0002")):
        product = await store.create_product(
            merchant, code=code, title="Tea", targets={"taobao": {"item_id": "123456"}},
            image_url=None, price="1.00")
        ids.append(product.id)
    return ids[0], ids[1]


@contextlib.asynccontextmanager
async def _gateway_writer_and_lock(
        path: Path) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore, sqlite3.Connection]]:
    """The gateway's store and a click writer's on one file, and a plain connection that
    holds the write lock when told (a batch of another writer's in progress)."""
    gateway = await SQLiteStore.open(path, busy_timeout=20)
    writer = await SQLiteStore.open(path, busy_timeout=20)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        yield gateway, writer, holder
    finally:
        holder.close()
        await writer.close()
        await gateway.close()


async def _finish_order(holder: sqlite3.Connection, **tasks: asyncio.Task[Any]) -> list[str]:
    """Let the holder's lock go; the names of the tasks in the order they finish."""
    finished: list[str] = []
    for name, task in tasks.items():
        task.add_done_callback(lambda _, name=name: finished.append(name))
    holder.execute("ROLLBACK")
    await asyncio.wait_for(asyncio.gather(*tasks.values()), 60)
    return finished


async def test_a_write_waiting_for_the_lock_goes_before_the_click_writers_next_batch(
        tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    async with _gateway_writer_and_lock(path) as (gateway, writer, holder):
        p1, _ = await _two_merchants(gateway)
        holder.execute("BEGIN IMMEDIATE")  # a batch of the writer's, in progress
        save = asyncio.create_task(gateway.update_merchant("m2", name="Two, renamed"))
        await until(lambda: _someone_waits(_turns_file(path)), what="the save waits")
        batch = asyncio.create_task(writer.record(
            [click(n, product=p1, visitor=f"v{n}") for n in range(20_000)], []))
        await asyncio.sleep(0)  # the batch is on the writer's thread, asking for the lock
        # That batch commits: who goes next?
        assert await _finish_order(holder, save=save, batch=batch) == ["save", "batch"]
        renamed = await gateway.get_merchant("m2")
        assert renamed is not None and renamed.name == "Two, renamed"
        rows = await gateway.stats("m1", from_day="2026-11-01", to_day="2026-11-01",
                                   by="platform")
        assert [r.clicks for r in rows] == [20_000]
        assert await gateway.stats("m2", from_day="2026-11-01", to_day="2026-11-01",
                                   by="platform") == []


async def test_a_write_that_begins_waiting_while_a_writer_waits_for_the_lock_goes_first(
        tmp_path: Path) -> None:
    # Several workers (serve --workers): writer B waits for the lock that A (another
    # worker's writer) holds; a save begins waiting after B looked. B must let it in.
    path = tmp_path / "linkloop.db"
    async with _gateway_writer_and_lock(path) as (gateway, writer_b, writer_a):
        p1, _ = await _two_merchants(gateway)
        for trial in range(3):
            writer_a.execute("BEGIN IMMEDIATE")
            batch = asyncio.create_task(writer_b.record(
                [click(trial * 10_000 + n, product=p1, visitor=f"v{n}") for n in range(5_000)],
                []))
            # A head start: B is past its first look, waiting for the lock (the case its
            # second look is for). Without one, B waits at its first look: the same order.
            await asyncio.sleep(0.2)
            save = asyncio.create_task(gateway.update_merchant("m2", name=f"Two {trial}"))
            await until(lambda: _someone_waits(_turns_file(path)), what="the save waits")
            assert await _finish_order(writer_a, save=save, batch=batch) == [
                "save", "batch"], trial
        rows = await gateway.stats("m1", from_day="2026-11-01", to_day="2026-11-01",
                                   by="platform")
        assert [r.clicks for r in rows] == [15_000]


async def test_a_batch_written_in_parts_counts_each_row_once(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "linkloop.db")
    try:
        p1, p2 = await _two_merchants(store)
        clicks = [click(n, merchant="m1" if n % 3 else "m2", product=p1 if n % 3 else p2,
                        visitor=f"v{n % 7}") for n in range(60)]
        # Adds listed in the reverse order of their clicks: most are in an earlier part
        # than their click, stored unattributed, and must count once the click is in.
        adds = [Event(id=f"event{n:08d}", merchant_id=c.merchant_id, product_id=c.product_id,
                      click_id=c.id, target="", kind="add", platform="taobao", ts=1.0,
                      day="2026-11-01") for n, c in enumerate(reversed(clicks)) if n % 2]
        events = [*adds, *(event(1000 + n, product_id=p1) for n in range(5))]
        ahead = sum(n // 7 < clicks.index(next(c for c in clicks if c.id == a.click_id)) // 7
                    for n, a in enumerate(adds))
        assert ahead >= len(adds) // 2  # the premise: parts of 7 put most adds first
        store._batch_rows = 7  # as after slow transactions (a busy CPU); too few to re-pace
        # Its first three parts committed, then the write failed: the whole batch again.
        await store.record(clicks[:21], events[:21])
        await store.record(clicks, events)
        await store.record(clicks, events)  # and a replay after an unclear failure
        assert store._batch_rows == 7

        for merchant in ("m1", "m2"):
            mine = [c for c in clicks if c.merchant_id == merchant]
            rows = await store.stats(merchant, from_day="2026-11-01", to_day="2026-11-01",
                                     by="platform")
            assert [(r.clicks, r.unique_visitors, r.adds, r.storefront_opens)
                    for r in rows] == [(
                        len(mine), len({c.visitor for c in mine}),
                        sum(a.merchant_id == merchant for a in adds),
                        5 if merchant == "m1" else 0)]
    finally:
        await store.close()


async def test_clicks_are_written_while_a_stopped_process_holds_its_turn(
        tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    store = await SQLiteStore.open(path, busy_timeout=1)
    stuck = WriteTurns(path)
    try:
        p1, p2 = await _two_merchants(store)
        with stuck.waiting(0):  # a write that never finishes (its process stopped)
            await asyncio.wait_for(store.record([click(1, product=p1),
                                                 click(2, merchant="m2", product=p2)], []),
                                   20)
        assert [[r.clicks for r in await store.stats(
            m, from_day="2026-11-01", to_day="2026-11-01", by="platform")]
            for m in ("m1", "m2")] == [[1], [1]]
    finally:
        stuck.close()
        await store.close()


async def test_a_short_write_goes_on_without_its_turn_when_a_writer_stops_mid_look(
        tmp_path: Path) -> None:
    path = tmp_path / "linkloop.db"
    store = await SQLiteStore.open(path, busy_timeout=1)
    looking = os.open(_turns_file(path), os.O_RDWR)
    try:
        await _two_merchants(store)
        fcntl.flock(looking, fcntl.LOCK_EX)  # a click writer stopped while it looked
        renamed = await asyncio.wait_for(store.update_merchant("m2", name="Two, renamed"), 20)
        assert renamed is not None and renamed.name == "Two, renamed"
        assert (await store.get_merchant("m1")).name == "One"  # type: ignore[union-attr]
    finally:
        os.close(looking)
        await store.close()


def test_a_killed_process_that_was_waiting_for_the_lock_no_longer_counts_as_waiting(
        tmp_path: Path) -> None:
    database = tmp_path / "linkloop.db"
    waiting = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; "
         "from gateway.store.turns import WriteTurns; "
         "turns = WriteTurns(Path(sys.argv[1])); held = turns.waiting(0); held.__enter__(); "
         "print('waiting', flush=True); time.sleep(600)", str(database)],
        stdout=subprocess.PIPE, text=True)
    writer = WriteTurns(database)
    try:
        assert waiting.stdout is not None and waiting.stdout.readline() == "waiting\n"
        assert writer.waiting_writes()
        waiting.kill()
        waiting.wait()
        until_sync(lambda: not writer.waiting_writes(), what="the kernel let its turn go")
    finally:
        waiting.kill()
        writer.close()


def test_the_turns_file_is_the_databases_however_it_is_reached(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    database = tmp_path / "data" / "linkloop.db"
    database.write_bytes(b"")
    database.chmod(0o640)
    direct, linked = WriteTurns(database), WriteTurns(tmp_path / "link" / "linkloop.db")
    try:
        assert direct.path == linked.path == tmp_path / "data" / "linkloop.db-turns"
        with direct.waiting(0):
            assert linked.waiting_writes()
        # Made like SQLite makes its -wal: with the database's mode, for whoever opens
        # the database next (the service, after an operator's command).
        assert direct.path.stat().st_mode & 0o777 == 0o640
    finally:
        direct.close()
        linked.close()


async def test_a_store_opens_while_another_process_holds_the_write_lock(
        tmp_path: Path) -> None:
    # Every open asks whether a secret is stored unsealed; asking must not wait for the
    # lock that a click writer behind a spike keeps taking.
    path = tmp_path / "linkloop.db"
    box = SecretBox([secrets.token_bytes(32)])
    first = await SQLiteStore.open(path, busy_timeout=0.5, secrets=box)
    await _two_merchants(first)
    await first.close()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        store = await SQLiteStore.open(path, busy_timeout=0.5, secrets=box)
        try:
            assert [m.id for m in await store.list_merchants()] == ["m1", "m2"]
        finally:
            await store.close()
    finally:
        holder.close()


async def test_a_batch_that_finds_the_lock_taken_fails_as_storage_unavailable(
        tmp_path: Path) -> None:
    # The recorder journals a batch whose write failed as StoreUnavailable, and stores it
    # later; an empty batch takes no lock at all. The store writes again after.
    path = tmp_path / "linkloop.db"
    store = await SQLiteStore.open(path, busy_timeout=0.2, timeout_seconds=10)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        p1, p2 = await _two_merchants(store)
        batch = [click(1, product=p1), click(2, merchant="m2", product=p2)]
        holder.execute("BEGIN IMMEDIATE")
        await store.record([], [])
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.record(batch, [])
        holder.execute("ROLLBACK")
        await store.record(batch, [])
        assert [[r.clicks for r in await store.stats(
            m, from_day="2026-11-01", to_day="2026-11-01", by="platform")]
            for m in ("m1", "m2")] == [[1], [1]]
    finally:
        holder.close()
        await store.close()


@pytest.mark.parametrize("table", ["entries", "app_credentials"])
async def test_an_open_seals_a_plain_secret_of_either_kind_alone(
        tmp_path: Path, table: str) -> None:
    # The open reads first whether anything is plain: a plain credential with no plain
    # entry (or the other way round) is still found and sealed.
    path = tmp_path / "linkloop.db"
    box = SecretBox([secrets.token_bytes(32)])
    store = await SQLiteStore.open(path, secrets=box)
    await _two_merchants(store)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO entries (merchant_id, kind, config, secrets, updated_at) VALUES "
            "('m1', 'acquisition_link', '{}', ?, 1)",
            (json.dumps({"secret": "plain-entry"} if table == "entries"
                        else box.seal(json.dumps({"secret": "x"}), "entries/m1")),))
        conn.execute(
            "INSERT INTO app_credentials (merchant_id, platform, app_id, secret, updated_at) "
            "VALUES ('m2', 'wechat_miniprogram', 'wx1234567890abcdef', ?, 1)",
            ("plain-credential" if table == "app_credentials"
             else box.seal("x", "app_credentials/m2/wechat_miniprogram"),))
    store = await SQLiteStore.open(path, secrets=box)
    await store.close()
    with sqlite3.connect(path) as conn:
        column = "secrets" if table == "entries" else "secret"
        stored = [r[0] for r in conn.execute(f"SELECT {column} FROM {table}")]
    assert len(stored) == 1 and "plain" not in stored[0]


def test_a_link_planted_as_the_turns_file_is_not_followed(tmp_path: Path) -> None:
    # The data directory is the service's: a link there must not lead a command run as
    # root to change (or hand over) another file.
    database = tmp_path / "linkloop.db"
    database.write_bytes(b"")
    database.chmod(0o644)
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    victim.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(database, 65534, 65534)
    _turns_file(database).symlink_to(victim)
    turns = WriteTurns(database)
    try:
        with turns.waiting(0):  # no turns, no error: writes go on as before
            assert not _someone_waits(victim)
        found = victim.stat()
        assert (found.st_mode & 0o777, found.st_uid) == (0o600, os.geteuid())
    finally:
        turns.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to make a file as another user's")
def test_a_turns_file_made_by_root_belongs_to_the_databases_owner(tmp_path: Path) -> None:
    # `sudo linkloop user create ...` first, then the service as its own user: the file
    # root made is the service's, as SQLite does with its -wal and -shm.
    database = tmp_path / "linkloop.db"
    database.write_bytes(b"")
    os.chown(database, 65534, 65534)
    WriteTurns(database).close()
    assert _turns_file(database).stat().st_uid == 65534


@pytest.mark.parametrize(("limit", "rows", "held", "expected"), [
    (None, 20_000, 8.0, 6_250),     # one busy CPU: to hold it 2.5 s, not 8 s
    (6_250, 6_250, 0.5, 31_250),    # the CPU is free again: back up at that pace
    (6_250, 6_250, 2.0, 6_250),     # within the hold and not far below: as it is
    (6_250, 634, 0.8, 6_250),       # a batch's short remainder tells no pace
    (6_250, 6_250, 1.0, 15_625),    # under half the hold: grown
    (6_250, 6_250, 1.25, 6_250),    # half the hold exactly: as it is
    (6_250, 6_250, 4.0, 3_906),     # slower still: smaller again
    (None, 20_000, 2.5, None),      # a whole batch within the hold: still whole
    (None, 20_000, 0.1, None),
    (None, 600, 10.0, 500),         # however slow, a part takes 500 at least
    (6_250, 3, 0.4, 6_250),         # a few rows' time is a transaction's own cost
    (500, 500, 0.0, 1_250_000_000),  # too quick to time: no limit worth the name
])
def test_a_batchs_parts_are_sized_at_the_pace_of_the_last_one(
        limit: int | None, rows: int, held: float, expected: int | None) -> None:
    assert _part_rows(limit, rows, held, 2.5) == expected


# --- The turns file's own cases (turns.py): another user's file, no turns and why, ---
# --- descriptor 0, a new file's mode, a wait through a writer's look, closing twice. ---


_NOBODY = 65534


@contextlib.contextmanager
def _as_another_user() -> Iterator[None]:
    """The block run as a user who did not make the files: root as ``nobody`` (its
    effective uid only, given back after: modes do not keep root out); anyone else as
    themselves, kept out by the files' modes."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(_NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory that another user can reach: pytest's own are root's alone (0o700)
    when the suite runs as root."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="linkloop-turns-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_a_turns_file_made_by_another_user_takes_turns_read_only(shared_dir: Path) -> None:
    # The service made the turns file; an operator's command that can read the database
    # cannot open it read-write, and takes turns all the same (a flock needs no write
    # access): its writes still go before the service's click writer, and the other way.
    database = shared_dir / "linkloop.db"
    database.write_bytes(b"")
    database.chmod(0o644)
    service = WriteTurns(database)
    mode = 0o644 if os.geteuid() == 0 else 0o444  # as root: root's file, opened as nobody
    service.path.chmod(mode)
    with _as_another_user():
        operator = WriteTurns(database)
    try:
        assert not operator.waiting_writes() and not service.waiting_writes()
        with operator.waiting(0):
            assert service.waiting_writes()
        with service.waiting(0):
            assert operator.waiting_writes()
        assert not operator.waiting_writes() and not service.waiting_writes()
        found = service.path.stat()  # an existing file is never changed
        assert (found.st_mode & 0o777, found.st_uid) == (mode, os.geteuid())
    finally:
        operator.close()
        service.close()


@pytest.mark.parametrize("case", ["link", "hard link", "no access to make it",
                                  "no access to open it"])
def test_with_no_turns_the_log_says_which_file_and_why(shared_dir: Path, case: str) -> None:
    # Writes go on without turns (as before turns); the operator learns why from the log.
    database = shared_dir / "linkloop.db"
    database.write_bytes(b"")
    path = _turns_file(database)
    victim = shared_dir / "victim"
    victim.write_bytes(b"secret")
    victim.chmod(0o600)
    another_user: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if case == "link":
        path.symlink_to(victim)
        why = os.strerror(errno.ELOOP)
    elif case == "hard link":  # a second name of another file
        os.link(victim, path)
        why = f"{path} is not a plain file"
    else:
        if case == "no access to open it":
            WriteTurns(database).close()
            path.chmod(0o000)
        elif os.geteuid() != 0:
            shared_dir.chmod(0o555)
        another_user = _as_another_user()
        why = os.strerror(errno.EACCES)
    try:
        with structlog.testing.capture_logs() as logs, another_user:
            turns = WriteTurns(database)
    finally:
        shared_dir.chmod(0o755)
    try:
        assert [(e["event"], e["log_level"], e["path"]) for e in logs] == [
            ("store.no_write_turns", "warning", str(path))]
        assert why in logs[0]["error"]
        with turns.waiting(0):  # no turns: nothing held, here or through the link
            assert not turns.waiting_writes()
            assert not _someone_waits(victim)
        assert victim.read_bytes() == b"secret" and victim.stat().st_mode & 0o777 == 0o600
    finally:
        turns.close()


def test_turns_on_descriptor_0_are_turns(tmp_path: Path) -> None:
    # A gateway started with its stdin closed (`linkloop serve <&-`): the first file it
    # opens is descriptor 0, a file like any other, not "no file".
    database = tmp_path / "linkloop.db"
    other = tmp_path / "other.db"
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    os.link(victim, _turns_file(other))  # a hard link planted as other.db's turns file
    peer = WriteTurns(database)
    stdin = os.dup(0)
    os.close(0)
    try:
        turns = WriteTurns(database)
        try:
            assert os.fstat(0).st_ino == turns.path.stat().st_ino  # the premise
            assert not turns.waiting_writes()
            with peer.waiting(0):
                assert turns.waiting_writes()
            with turns.waiting(0):
                assert peer.waiting_writes()
        finally:
            turns.close()
        with pytest.raises(OSError):  # closed: no descriptor left behind
            os.fstat(0)
        refused = WriteTurns(other)  # opened at 0 too, and refused there as anywhere
        try:
            with refused.waiting(0):
                assert not _someone_waits(victim)
        finally:
            refused.close()
    finally:
        os.dup2(stdin, 0)
        os.close(stdin)
        peer.close()


@pytest.mark.parametrize(("database_mode", "expected"), [
    (0o755, 0o644),  # `chmod -R 755` of the data directory: no execute bit, it runs nothing
    (None, 0o600),   # no database to take the mode from: the maker's alone
])
def test_a_new_turns_files_mode(tmp_path: Path, database_mode: int | None,
                                expected: int) -> None:
    database = tmp_path / "linkloop.db"
    if database_mode is not None:
        database.write_bytes(b"")
        database.chmod(database_mode)
    umask = os.umask(0o022)  # a service's usual
    try:
        WriteTurns(database).close()
    finally:
        os.umask(umask)
    found = _turns_file(database).stat()
    assert (found.st_mode & 0o7777, found.st_uid) == (expected, os.geteuid())


def test_a_short_write_waits_through_a_click_writers_look(tmp_path: Path) -> None:
    # A look takes the turns file exclusively for two system calls; a write that finds it
    # so waits (up to its limit) and then holds its turn, rather than going on without.
    turns = WriteTurns(tmp_path / "linkloop.db")
    looking = os.open(turns.path, os.O_RDWR)
    fcntl.flock(looking, fcntl.LOCK_EX)  # a click writer looking (slowed down, here)
    looked = threading.Event()
    held: list[bool] = []

    def write() -> None:
        with turns.waiting(DEADLINE):
            looked.wait(DEADLINE)
            held.append(_someone_waits(turns.path))  # its turn, now the look is over

    writing = threading.Thread(target=write)
    writing.start()
    try:
        # A head start: the write finds the look under way. (Without one it takes its
        # turn at once, the same answer.)
        time.sleep(0.2)
    finally:
        os.close(looking)
        looked.set()
        writing.join()
        turns.close()
    assert held == [True]


def test_turns_closed_twice_close_nothing_else(tmp_path: Path) -> None:
    turns = WriteTurns(tmp_path / "linkloop.db")
    turns.close()
    since = os.open(tmp_path / "since", os.O_RDWR | os.O_CREAT)  # its old number, likely
    try:
        turns.close()
        assert not turns.waiting_writes()
        for fd in (since, 0, 1, 2):
            os.fstat(fd)  # all still open
    finally:
        os.close(since)
