"""A full disk under a real gateway: links keep answering, and no click is lost.

The data directory (the SQLite file, the click log, the journal) is on a small tmpfs the
test mounts and fills, so every write there meets ENOSPC the way a full disk's does: a
partial write, a failed commit, and a mapped page the kernel cannot back. Mounting needs
root (CAP_SYS_ADMIN); elsewhere these tests skip and say so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.recorder import Journal
from gateway.store import Click

from .conftest import TAOBAO_UA
from .test_cli import run, serving
from .test_crash import _merchant, _product, _stored_clicks
from .wait import until


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: room for a fresh data directory and a click log segment (8 MiB)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


def _fill(disk: Path) -> Path:
    """Write until the disk is full; remove the file returned to free the space again."""
    filler = disk / "filler"
    chunk = bytes(1 << 16)
    with open(filler, "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(chunk)
        with contextlib.suppress(OSError):  # the last few bytes
            while True:
                fh.write(b"\0")
    return filler


def _events(log: Path) -> list[str]:
    events = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            events.append(json.loads(line)["event"])
    return events


async def test_a_gateway_on_a_full_disk_keeps_answering_and_stores_every_click_after(
    cli_env: dict[str, str], small_disk: Path, tmp_path: Path,
) -> None:
    env = {**cli_env, "LINKLOOP_STORAGE_DATA_DIR": str(small_disk / "data"),
           "LINKLOOP_STORAGE_TIMEOUT_SECONDS": "1", "LINKLOOP_RECORDER_RETRY_MAX_SECONDS": "1",
           "LINKLOOP_LOG_FORMAT": "json"}
    auths = {m: _merchant(env, m) for m in ("acme", "brew")}
    answered: dict[str, set[str]] = {"acme": set(), "brew": set()}
    log = tmp_path / "gateway.log"

    with serving(env, log=log) as (proc, base):
        async with aiohttp.ClientSession() as http:
            codes = {m: await _product(http, base, auth) for m, auth in auths.items()}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            async def tap(merchant: str) -> None:
                async with http.get(f"{base}/p/{codes[merchant]}", allow_redirects=False,
                                    headers={"User-Agent": TAOBAO_UA}) as resp:
                    assert resp.status == 302
                    answered[merchant].add(resp.cookies["ll_v"].value)

            async def readyz() -> tuple[int, str]:
                async with http.get(f"{base}/readyz") as resp:
                    return resp.status, (await resp.json())["storage"]

            async def journal_ok() -> bool:
                async with http.get(f"{base}/readyz") as resp:
                    return bool((await resp.json())["journal"] == "ok")

            async def not_ready() -> bool:
                return await readyz() == (503, "failing")

            async def ready() -> bool:
                return (await readyz())[0] == 200

            for merchant in codes:
                await tap(merchant)
            filler = _fill(small_disk)
            # Hundreds of clicks on a full disk: the click log's segment takes them (a
            # sparse one met SIGBUS at its next fresh page and the gateway died), storage
            # and the journal fail, and the operator is told.
            try:
                for _ in range(300):
                    for merchant in codes:
                        await tap(merchant)
            except aiohttp.ClientConnectionError:
                pytest.fail(f"the gateway died on the full disk: exit {proc.wait(10)}")
            await until(not_ready, what="/readyz saying not ready while the disk is full")
            filler.unlink()
            await until(ready, what="/readyz ready again")

            async def stored() -> bool:
                return all(answered[m] <= set(_stored_clicks(env, m)) for m in answered)

            await until(stored, within=30, interval=0.5, what="every answered click stored")
            # Storage takes every click now, so nothing writes to the journal: it is probed,
            # or /readyz said "journal": "failing" long after the disk had room again.
            await until(journal_ok, what="/readyz saying the journal is ok again")
    assert proc.returncode == 0
    for merchant, ids in answered.items():
        assert len(ids) == 301
        mine = _stored_clicks(env, merchant)
        assert sorted(mine) == sorted(ids), merchant  # each once, under its own merchant
    # The outage is told once each way, by the gateway and by its writer, not per retry.
    said = _events(log)
    for event in ("recorder.storage_failed", "recorder.journal_failed",
                  "recorder.storage_back", "recorder.journal_back", "writer.batch_failed"):
        assert said.count(event) == 1, (event, said.count(event))


def _click(n: int, merchant: str) -> Click:
    return Click(id=f"{merchant}c{n:09d}", merchant_id=merchant, product_id=1, ts=1.0,
                 day="2026-11-01", platform="taobao", source="ua", visitor=f"v{n}",
                 ip_hash="h")


def test_a_journal_append_a_full_disk_cuts_short_leaves_no_torn_line(small_disk: Path) -> None:
    journal = Journal(small_disk / "journal")
    journal.append([_click(0, "acme"), _click(0, "brew")])
    filler = _fill(small_disk)
    batch = [_click(n, merchant) for n in range(1, 200) for merchant in ("acme", "brew")]
    with pytest.raises(OSError) as failed:
        journal.append(batch)
    assert failed.value.errno == errno.ENOSPC
    filler.unlink()
    # The recorder kept the batch in memory and journals it again once there is room: the
    # first row of it was glued to the part the full disk had taken, and lost.
    journal.append(batch)
    clicks, events, bad = Journal.read(journal.pending)
    assert (clicks, events, bad) == ([_click(0, "acme"), _click(0, "brew"), *batch], [], 0)


def test_a_journal_probe_fails_while_the_disk_is_full_and_leaves_nothing(
        small_disk: Path) -> None:
    journal = Journal(small_disk / "journal")
    filler = _fill(small_disk)
    with pytest.raises(OSError) as failed:
        journal.probe()  # an open, or an empty write, would pass on a full disk
    assert failed.value.errno == errno.ENOSPC
    filler.unlink()
    journal.probe()
    assert list(journal.directory.iterdir()) == [] and not journal.has_rows()


def test_a_gateway_started_on_a_full_disk_says_so_in_one_line_and_leaves_no_draft(
        cli_env: dict[str, str], small_disk: Path) -> None:
    # Its first start makes the data directory's keys: on a full disk that was a
    # traceback, and a half-made ``.ip.salt.<pid>`` left beside the key it never made.
    data = small_disk / "data"
    data.mkdir()
    _fill(small_disk)
    result = run({**cli_env, "LINKLOOP_STORAGE_DATA_DIR": str(data)}, "serve")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "No space left on device" in result.stderr
    assert [p.name for p in data.iterdir() if p.name.startswith(".")] == []
